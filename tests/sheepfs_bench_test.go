package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sheepfsBenchPath is one way of moving a whole VDI sequentially.
type sheepfsBenchPath struct {
	name        string
	write, read []string // command lines
	writeMiBs   []float64
	readMiBs    []float64
	medW, medR  float64
}

var sheepfsBench struct {
	once  sync.Once
	paths []*sheepfsBenchPath
}

// BenchmarkSheepfs measures sequential reads and writes of a whole VDI
// through sheepfs (dd bs=1M on volume/NAME, direct I/O, fsync at the end
// of writes) next to the same VDI through the sheep's NBD export with
// nbdcopy (--flush), in the same run on the same one-node copies=1
// sheep. nbdcopy runs twice: as shipped (several connections, many
// requests in flight) and one 1 MiB request at a time like dd. The paths
// take turns, several rounds, keeping the median. SHEEPFS_BENCH_MB (VDI
// size, default 512) and SHEEPFS_BENCH_ROUNDS (default 3) tune it. The
// measurement runs once, however many iterations the harness asks for.
func BenchmarkSheepfs(b *testing.B) {
	sheepfsNeedFuse(b)
	needTools(b, "nbdcopy", "dd")
	sheepfsBench.once.Do(func() { runSheepfsBench(b) })
	if sheepfsBench.paths == nil {
		b.Fatal("the measurement failed in an earlier iteration")
	}
	fs, nbd := sheepfsBench.paths[0], sheepfsBench.paths[2]
	b.ReportMetric(fs.medW, "sheepfs-write-MiB/s")
	b.ReportMetric(fs.medR, "sheepfs-read-MiB/s")
	b.ReportMetric(fs.medW/nbd.medW, "ratio-write-vs-nbdcopy")
	b.ReportMetric(fs.medR/nbd.medR, "ratio-read-vs-nbdcopy")
}

func runSheepfsBench(b *testing.B) {
	mb := envInt(b, "SHEEPFS_BENCH_MB", 512)
	rounds := envInt(b, "SHEEPFS_BENCH_ROUNDS", 3)
	size := int64(mb) << 20

	nbdAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(b))
	s := sheepfsCluster(b, []string{"--nbd", nbdAddr}, "bench", strconv.FormatInt(size, 10))
	m := mountSheepfs(b, s)
	if err := os.WriteFile(m.path("vdi", "mount"), []byte("bench\n"), 0); err != nil {
		b.Fatal(err)
	}
	vol := m.path("volume", "bench")
	src := filepath.Join(b.TempDir(), "src")
	tool(b, "dd", "if=/dev/urandom", "of="+src, "bs=1M", "count="+strconv.Itoa(mb), "status=none")
	uri := nbdURI(nbdAddr, "bench")

	dd := func(bs string) *sheepfsBenchPath {
		return &sheepfsBenchPath{
			name:  "sheepfs dd bs=" + bs,
			write: []string{"dd", "if=" + src, "of=" + vol, "bs=" + bs, "conv=notrunc,fsync", "status=none"},
			read:  []string{"dd", "if=" + vol, "of=/dev/null", "bs=" + bs, "status=none"},
		}
	}
	paths := []*sheepfsBenchPath{
		dd("1M"),
		dd("4M"),
		{
			name:  "nbdcopy (default)",
			write: []string{"nbdcopy", "--flush", src, uri},
			read:  []string{"nbdcopy", uri, "null:"},
		},
		{
			name:  "nbdcopy -C1 -R1 1M",
			write: []string{"nbdcopy", "-C", "1", "-R", "1", "--request-size=1048576", "--flush", src, uri},
			read:  []string{"nbdcopy", "-C", "1", "-R", "1", "--request-size=1048576", uri, "null:"},
		},
	}
	// Allocate every object first, so that all paths overwrite and read
	// data rather than holes.
	tool(b, paths[0].write[0], paths[0].write[1:]...)
	timed := func(cmd []string) float64 {
		start := time.Now()
		tool(b, cmd[0], cmd[1:]...)
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	for r := 0; r < rounds; r++ {
		for _, p := range paths {
			p.writeMiBs = append(p.writeMiBs, timed(p.write))
		}
		for _, p := range paths {
			p.readMiBs = append(p.readMiBs, timed(p.read))
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Printf("\nsheepfs vs NBD: one sheep copies=1, %d MiB VDI, sequential, median of %d rounds (direct I/O on sheepfs)\n", mb, rounds)
	fmt.Printf("%-22s | %12s | %12s | %s\n", "", "write MiB/s", "read MiB/s", "command (write)")
	ref := paths[2]
	ref.medW, ref.medR = median(ref.writeMiBs), median(ref.readMiBs)
	for _, p := range paths {
		p.medW, p.medR = median(p.writeMiBs), median(p.readMiBs)
		fmt.Printf("%-22s | %7.1f %4.2fx | %7.1f %4.2fx | %s\n", p.name, p.medW, p.medW/ref.medW, p.medR, p.medR/ref.medR,
			strings.Join(p.write, " "))
	}
	fmt.Println("(ratios are to nbdcopy as shipped)")
	sheepfsBench.paths = paths
}
