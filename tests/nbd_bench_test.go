package tests

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fioJob is one measured fio workload. fresh jobs write a device never
// written before (a VDI just created, a file just truncated) of
// freshSize bytes, for at most the runtime; the others run for the
// runtime over a device of nbdBenchSize bytes filled once.
type fioJob struct {
	name      string
	rw        string
	bs        string
	depth     int
	fresh     bool
	freshSize int
}

var nbdBenchJobs = []fioJob{
	// Sequential first writes get a device large enough that no target
	// reaches its end within the runtime on a fast machine (one that did
	// would stop there, having written only fresh blocks anyway).
	{name: "first seq write 1M qd8", rw: "write", bs: "1M", depth: 8, fresh: true, freshSize: 8 << 30},
	{name: "seq overwrite 1M qd8", rw: "write", bs: "1M", depth: 8},
	// Random first writes go to a VDI of the filled device's size (a
	// fresh disk image): every object is allocated in the first moments,
	// and the rest of the run writes blocks never written in them.
	{name: "first rand write 4K qd32", rw: "randwrite", bs: "4k", depth: 32, fresh: true, freshSize: nbdBenchSize},
	{name: "rand overwrite 4K qd32", rw: "randwrite", bs: "4k", depth: 32},
	{name: "seq read 1M qd8", rw: "read", bs: "1M", depth: 8},
	{name: "rand read 4K qd32", rw: "randread", bs: "4k", depth: 32},
}

// nbdBenchSize is the size of the devices filled for overwrites and
// reads (and fio's range there).
const nbdBenchSize = 1 << 30

// nbdFreshMax is the size of the largest fresh device a job uses.
const nbdFreshMax = 8 << 30

// fioResult is what one fio run measured: bandwidth, IOPS, and the
// median and 99th percentile of completion latency.
type fioResult struct{ mibs, iops, p50, p99 float64 }

// runFio runs one job against uri for runtime (time-based, or, for a
// fresh device, until runtime or the device's end) and returns what it
// measured.
func runFio(b testing.TB, uri string, j fioJob, runtime time.Duration) fioResult {
	b.Helper()
	size := nbdBenchSize
	if j.fresh {
		size = j.freshSize
	}
	args := []string{"--name=" + j.rw, "--ioengine=nbd", "--uri=" + uri, "--rw=" + j.rw, "--bs=" + j.bs,
		"--iodepth=" + strconv.Itoa(j.depth), "--size=" + strconv.Itoa(size), "--output-format=json"}
	if runtime > 0 {
		args = append(args, "--runtime="+strconv.Itoa(int(runtime.Seconds())), "--randrepeat=0")
		if !j.fresh {
			args = append(args, "--time_based")
		}
	}
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		b.Fatalf("fio %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return parseFio(b, out, j.rw)
}

// parseFio reads the first job's stats for the direction of rw out of
// fio's JSON output (summed over jobs with group_reporting).
func parseFio(b testing.TB, out []byte, rw string) fioResult {
	b.Helper()
	// fio's nbd engine prints a line before the JSON document.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var doc struct {
		Jobs []map[string]json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || len(doc.Jobs) != 1 {
		b.Fatalf("fio output: %v\n%s", err, out)
	}
	dir := "write"
	if strings.Contains(rw, "read") {
		dir = "read"
	}
	var st struct {
		BwBytes float64 `json:"bw_bytes"`
		IOPS    float64 `json:"iops"`
		Clat    struct {
			Percentile map[string]float64 `json:"percentile"`
		} `json:"clat_ns"`
	}
	if err := json.Unmarshal(doc.Jobs[0][dir], &st); err != nil {
		b.Fatalf("fio %s stats: %v", dir, err)
	}
	return fioResult{mibs: st.BwBytes / (1 << 20), iops: st.IOPS,
		p50: st.Clat.Percentile["50.000000"] / 1e6, p99: st.Clat.Percentile["99.000000"] / 1e6}
}

// hostLimit measures what the host allows buffered writers: n fio jobs
// (psync, 1 MiB, each its own file in dir, on the disk the sheeps' store
// dirs are on) writing files created just before (sparse, as a sheep's
// objects are) for at most runtime, then overwriting them for runtime.
// It returns the total MiB/s of both passes.
func hostLimit(b testing.TB, dir string, n int, runtime time.Duration) (fresh, over float64) {
	b.Helper()
	d := filepath.Join(dir, "limit"+strconv.Itoa(n))
	os.RemoveAll(d)
	if err := os.MkdirAll(d, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(d)
	// Each job gets a file large enough not to be finished in runtime;
	// the overwrite pass then covers what the first one wrote.
	run := func(extra ...string) float64 {
		args := append([]string{"--name=limit", "--directory=" + d, "--numjobs=" + strconv.Itoa(n),
			"--rw=write", "--bs=1M", "--ioengine=psync", "--fallocate=none", "--group_reporting",
			"--runtime=" + strconv.Itoa(int(runtime.Seconds())), "--output-format=json"}, extra...)
		out, err := exec.Command("fio", args...).Output()
		if err != nil {
			b.Fatalf("fio %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return parseFio(b, out, "write").mibs
	}
	fresh = run("--size=" + strconv.Itoa(nbdFreshMax/n))
	over = run("--size="+strconv.Itoa(nbdBenchSize), "--time_based")
	return fresh, over
}

// cleanPageCache writes back every dirty page of the machine (sync), so
// that the job measured next starts clean: a first write of 1 MiB blocks
// leaves gigabytes dirty, and the next target would otherwise be
// throttled by the kernel while they are written back, paying for the
// target before it.
func cleanPageCache() { syscall.Sync() }

// benchTarget is an NBD server under measurement. fresh returns the URI
// of a device of size bytes never written, for a first-write job.
type benchTarget struct {
	name   string
	copies int // 0: not a sheep
	uri    string
	fresh  func(size int) string
	// drop deletes the fresh device fresh returned last, so that its
	// pages leave the page cache before the next target runs (each first
	// write then starts with the same memory free).
	drop func()
	// flush, for a target with the object cache on, flushes the VDI of
	// uri (FLUSH_VDI through collie) after every write job and returns
	// how long it took.
	flush func(uri string) time.Duration
}

// startNbdkit serves a fresh file of size bytes in dir (the disk the
// sheeps' store dirs are on) with nbdkit's file plugin, and stops it at
// cleanup. It returns the URI and the file.
func startNbdkit(b testing.TB, dir string, size int64) (string, string) {
	b.Helper()
	path := filepath.Join(dir, "nbdkit.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		b.Fatal(err)
	}
	port := freeTCPPort(b)
	cmd := exec.Command("nbdkit", "--foreground", "--exit-with-parent", "--ipaddr", "127.0.0.1",
		"--port", strconv.Itoa(port), "file", "file="+path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	uri := "nbd://127.0.0.1:" + strconv.Itoa(port) + "/"
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("nbdinfo", "--size", uri).Run() != nil {
		if time.Now().After(deadline) {
			b.Fatalf("nbdkit did not come up:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return uri, path
}

// startNBDCluster starts n sheeps (node 0 serving NBD on nbdAddr), formats
// with copies and creates the VDI "bench".
func startNBDCluster(b testing.TB, n, copies int, nbdAddr string, extra ...string) []*Sheep {
	b.Helper()
	return startNBDClusterFormat(b, n, "--copies="+strconv.Itoa(copies), nbdAddr, extra...)
}

// startNBDClusterFormat is startNBDCluster with the redundancy as format's
// option ("--copies=3", "-c 4:2" as "--copies=4:2").
func startNBDClusterFormat(b testing.TB, n int, redundancy, nbdAddr string, extra ...string) []*Sheep {
	b.Helper()
	var sheeps []*Sheep
	for i := 0; i < n; i++ {
		nbd := "none"
		if i == 0 {
			nbd = nbdAddr
		}
		args := append([]string{"-z", strconv.Itoa(i), "--nbd", nbd}, extra...)
		if i > 0 {
			args = append(args, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(b, args...))
	}
	for _, s := range sheeps {
		waitNodesTB(b, s, n)
	}
	sheeps[0].must(b, nil, "cluster", "format", redundancy)
	createVdi(b, sheeps[0], "bench", nbdBenchSize)
	return sheeps
}

// createVdi creates the VDI name of size bytes. Right after a format a
// create may be answered "waiting for format" although it went through
// (seen while the raft driver is young): retry, and take "exists" on a
// retry as done.
func createVdi(b testing.TB, s *Sheep, name string, size int) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for retry := false; ; retry = true {
		r := s.collie(b, nil, "vdi", "create", name, strconv.Itoa(size))
		if r.Code == 0 || (retry && strings.Contains(r.Stderr, "VDI exists already")) {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(r.Stderr, "Waiting for cluster to be formatted") {
			b.Fatalf("collie vdi create: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var nbdBench struct {
	once    sync.Once
	done    bool
	results map[string][]fioResult // by target, in nbdBenchJobs order
}

// BenchmarkNBD runs fio's nbd engine against a sheep's NBD export and
// against nbdkit serving a plain file on the same disk, in the same run,
// and prints a table with MiB/s, IOPS and ratios. Targets: one node
// copies=1 and three nodes copies=3 (fsync as shipped). Jobs: first
// writes on a fresh device (a VDI just created, a file just truncated)
// and overwrites of a filled one, separately, sequential 1 MiB at queue
// depth 8 and random 4 KiB at depth 32; then reads of the filled device.
//
// The host's own limit is measured in the same run: 1 and 3 parallel
// buffered fio writers (psync, 1 MiB) into fresh files on the same disk,
// then overwriting them. N copies on one host cannot beat N writers, so
// the sequential-write ratios are also given against the N-writer total
// divided by N. Completion latency (p50/p99) is printed for every target.
//
// All targets run side by side and every job is run against each in turn,
// several rounds, keeping the median: a shared machine's noise then hits
// all targets alike. Each run starts after a sync (cleanPageCache), so
// that none inherits the writeback of the one before, and each fresh
// device is deleted once its job is done, so that the next target's
// first writes find as much memory free as this one's did. NBD_BENCH_RUNTIME (seconds per run, default 3) and
// NBD_BENCH_ROUNDS (default 3) tune it. The measurement runs once, however
// many iterations the harness asks for.
func BenchmarkNBD(b *testing.B) {
	needTools(b, "fio", "nbdkit", "nbdinfo")
	nbdBench.once.Do(func() { runNBDBench(b); nbdBench.done = true })
	if !nbdBench.done {
		b.Fatal("the measurement failed in an earlier iteration")
	}
	ref := nbdBench.results["nbdkit file"]
	three := nbdBench.results["3 nodes copies=3"]
	for i, j := range nbdBenchJobs {
		unit := strings.ReplaceAll(j.name, " ", "-")
		b.ReportMetric(three[i].mibs/ref[i].mibs, "ratio3-"+unit)
	}
}

func envInt(b testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q", name, s)
	}
	return n
}

// median returns the run with the median bandwidth.
func median(rs []fioResult) fioResult {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b fioResult) int { return cmp.Compare(a.mibs, b.mibs) })
	return rs[len(rs)/2]
}

func medianOf(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func runNBDBench(b *testing.B) {
	runtime := time.Duration(envInt(b, "NBD_BENCH_RUNTIME", 3)) * time.Second
	rounds := envInt(b, "NBD_BENCH_ROUNDS", 3)
	dir := b.TempDir()
	// copies is what the limit rows divide by (1 or 3; others have none).
	sheepTarget := func(name string, n, copies int, redundancy string, extra ...string) benchTarget {
		addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(b))
		sheeps := startNBDClusterFormat(b, n, redundancy, addr, extra...)
		seq, last := 0, ""
		var flush func(string) time.Duration
		if slices.Contains(extra, "-w") {
			flush = func(uri string) time.Duration {
				t0 := time.Now()
				sheeps[0].must(b, nil, "vdi", "cache", "flush", uri[strings.LastIndexByte(uri, '/')+1:])
				return time.Since(t0)
			}
		}
		return benchTarget{name: name, copies: copies, uri: nbdURI(addr, "bench"), flush: flush, fresh: func(size int) string {
			seq++
			last = "fresh" + strconv.Itoa(seq)
			createVdi(b, sheeps[0], last, size)
			return nbdURI(addr, last)
		}, drop: func() {
			sheeps[0].must(b, nil, "vdi", "delete", last)
		}}
	}
	kitURI, _ := startNbdkit(b, dir, nbdBenchSize)
	// Fresh devices of nbdkit are a second instance on a file truncated
	// anew (to 0, dropping every block, then to the size) for each job.
	var kitFreshURI, kitFresh string
	targets := []benchTarget{
		{name: "nbdkit file", uri: kitURI, fresh: func(size int) string {
			if kitFresh == "" {
				kitFreshURI, kitFresh = startNbdkit(b, b.TempDir(), int64(size))
			}
			if err := os.Truncate(kitFresh, 0); err != nil {
				b.Fatal(err)
			}
			if err := os.Truncate(kitFresh, int64(size)); err != nil {
				b.Fatal(err)
			}
			return kitFreshURI
		}, drop: func() {
			if err := os.Truncate(kitFresh, 0); err != nil {
				b.Fatal(err)
			}
		}},
		sheepTarget("1 node copies=1", 1, 1, "--copies=1"),
		sheepTarget("3 nodes copies=3", 3, 3, "--copies=3"),
		// The object cache on the NBD node (every node gets -w; only node
		// 0 serves NBD): writes between flushes, and each write job's
		// final flush timed apart.
		sheepTarget("3 nodes c=3 cache", 3, 3, "--copies=3", "-w", "size="+strconv.Itoa(2*nbdBenchSize)),
		// Which writes skip the page cache: by default first writes
		// (--direct=fresh); -D every one that can, overwrites too;
		// --direct=off none.
		sheepTarget("3 nodes c=3 -D", 3, 3, "--copies=3", "-D"),
		sheepTarget("3 nodes c=3 buffered", 3, 3, "--copies=3", "--direct=off"),
		// Erasure coding next to three copies: 4 data + 2 parity strips
		// on 6 nodes, 1.5x the space instead of 3x.
		sheepTarget("6 nodes 4:2", 6, 6, "--copies=4:2"),
	}
	t0 := time.Now()
	// Fill every device once so that overwrites overwrite and reads read
	// data, not holes.
	for _, t := range targets {
		runFio(b, t.uri, fioJob{rw: "write", bs: "1M", depth: 8}, 0)
		if t.flush != nil {
			t.flush(t.uri)
		}
	}
	runs := map[string][][]fioResult{}  // by target, by job
	flushes := map[string][][]float64{} // seconds, by target, by job
	var limFresh, limOver [2][]float64  // 1 and 3 writers
	for r := 0; r < rounds; r++ {
		for k, n := range []int{1, 3} {
			cleanPageCache()
			f, o := hostLimit(b, dir, n, runtime)
			limFresh[k] = append(limFresh[k], f)
			limOver[k] = append(limOver[k], o)
			if testing.Verbose() {
				fmt.Printf("round %d, limit of %d writer(s): first write %.1f MiB/s, overwrite %.1f MiB/s\n", r+1, n, f, o)
			}
		}
		for i, j := range nbdBenchJobs {
			for _, t := range targets {
				if runs[t.name] == nil {
					runs[t.name] = make([][]fioResult, len(nbdBenchJobs))
				}
				uri := t.uri
				if j.fresh {
					uri = t.fresh(j.freshSize)
				}
				cleanPageCache()
				res := runFio(b, uri, j, runtime)
				runs[t.name][i] = append(runs[t.name][i], res)
				if testing.Verbose() {
					fmt.Printf("round %d, %s, %s: %.1f MiB/s, %.0f IOPS, p50/p99 %.1f/%.1f ms\n",
						r+1, t.name, j.name, res.mibs, res.iops, res.p50, res.p99)
				}
				if t.flush != nil && strings.Contains(j.rw, "write") {
					if flushes[t.name] == nil {
						flushes[t.name] = make([][]float64, len(nbdBenchJobs))
					}
					flushes[t.name][i] = append(flushes[t.name][i], t.flush(uri).Seconds())
				}
				if j.fresh {
					t.drop()
				}
			}
		}
	}
	results := map[string][]fioResult{}
	for _, t := range targets {
		for i := range nbdBenchJobs {
			results[t.name] = append(results[t.name], median(runs[t.name][i]))
		}
	}
	nbdBench.results = results
	lim := func(k int) (fresh, over float64) { return medianOf(limFresh[k]), medianOf(limOver[k]) }

	ref := results["nbdkit file"]
	fmt.Printf("\nNBD: fio nbd engine, median of %d rounds of %s per job and target (%s in all), nbdkit file on the same disk.\n",
		rounds, runtime, time.Since(t0).Round(time.Second))
	fmt.Println("Every job (and limit pass) starts after a sync, with no dirty page left by the one before; each fresh device is deleted after its job.")
	fmt.Printf("First writes go to a device never written (a VDI just created, a file just truncated: %d GiB sequential, %d MiB random); the others to a %d MiB device filled once.\n",
		nbdFreshMax>>30, nbdBenchSize>>20, nbdBenchSize>>20)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("Load average at the end: %s", la)
	}
	fmt.Printf("%-18s", "")
	for _, j := range nbdBenchJobs {
		fmt.Printf(" | %-32s", j.name)
	}
	fmt.Println()
	for _, t := range targets {
		fmt.Printf("%-18s", t.name)
		for i, j := range nbdBenchJobs {
			r := results[t.name][i]
			if strings.HasPrefix(j.bs, "4") {
				fmt.Printf(" | %7.0f IOPS %12s %5.2fx", r.iops, "", r.iops/ref[i].iops)
			} else {
				fmt.Printf(" | %7.1f MiB/s %11s %5.2fx", r.mibs, "", r.mibs/ref[i].mibs)
			}
		}
		fmt.Println()
	}
	fmt.Println("(ratios: to nbdkit file in the same column)")

	fmt.Println("\nHost limit: N parallel buffered writers (fio psync 1 MiB, one file each, same disk), fresh files then overwrite, total MiB/s:")
	for k, n := range []int{1, 3} {
		f, o := lim(k)
		fmt.Printf("  %d writer(s): first write %7.1f MiB/s (%6.1f per writer), overwrite %7.1f MiB/s (%6.1f per writer)\n", n, f, f/float64(n), o, o/float64(n))
	}
	fmt.Println("Sequential 1 MiB writes against the limit of their copies (N writers' total / N):")
	for _, t := range targets {
		if t.copies == 0 {
			continue
		}
		k := 0
		if t.copies == 3 {
			k = 1
		} else if t.copies != 1 {
			continue
		}
		f, o := lim(k)
		f, o = f/float64(t.copies), o/float64(t.copies)
		rs := results[t.name]
		fmt.Printf("  %-18s first write %6.1f of %6.1f MiB/s (%.2fx), overwrite %6.1f of %6.1f MiB/s (%.2fx)\n",
			t.name, rs[0].mibs, f, rs[0].mibs/f, rs[1].mibs, o, rs[1].mibs/o)
	}
	for _, t := range targets {
		if flushes[t.name] == nil {
			continue
		}
		fmt.Printf("Final flush after each write job (%s, FLUSH_VDI, median s):", t.name)
		for i, j := range nbdBenchJobs {
			if fs := flushes[t.name][i]; len(fs) > 0 {
				fmt.Printf(" | %s %.2f s", j.name, medianOf(fs))
			}
		}
		fmt.Println()
	}
	for _, name := range []string{"3 nodes copies=3", "3 nodes c=3 cache"} {
		one, rs := results["1 node copies=1"], results[name]
		fmt.Printf("%s against 1 node copies=1, writes:", name)
		for i, j := range nbdBenchJobs {
			if strings.Contains(j.rw, "write") {
				fmt.Printf(" | %s %.2fx", j.name, rs[i].mibs/one[i].mibs)
			}
		}
		fmt.Println()
	}
	fmt.Println("Completion latency p50 / p99 (ms):")
	for _, t := range targets {
		fmt.Printf("  %-18s", t.name)
		for i, j := range nbdBenchJobs {
			if strings.Contains(j.rw, "write") {
				r := results[t.name][i]
				fmt.Printf(" | %s %.1f / %.1f", j.name, r.p50, r.p99)
			}
		}
		fmt.Println()
	}
}
