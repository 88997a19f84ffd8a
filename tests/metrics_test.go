package tests

import (
	"bufio"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// scrape reads the exposition at addr into a map from the sample's name
// with its labels, as printed ("name{a=\"x\",b=\"y\"}"), to its value.
func scrape(t testing.TB, addr string) (map[string]float64, string) {
	t.Helper()
	rsp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	if err != nil || rsp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v", addr, rsp.Status, err)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		m[l[:i]] = v
	}
	return m, string(body)
}

// within fails unless got-before is want, give or take 1%.
func within(t *testing.T, what string, before, after map[string]float64, key string, want float64) {
	t.Helper()
	d := after[key] - before[key]
	if d < want || d > want*1.01 {
		t.Errorf("%s: %s moved by %.0f, want %.0f (+1%%)", what, key, d, want)
	}
}

// TestMetrics: a known workload through each front-end (collie on the
// native port, qemu-io over NBD, dd on a sheepfs volume) moves the
// request counters, bytes and latency histograms of that front-end by
// what was moved, the peer's counters by the copy it received, and the
// exposition passes the client library's linter.
func TestMetrics(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io", "dd")
	m0, m1 := "127.0.0.1:"+strconv.Itoa(freeTCPPort(t)), "127.0.0.1:"+strconv.Itoa(freeTCPPort(t))
	nbdAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	s0 := startSheep(t, "-z", "0", "--metrics", m0, "--nbd", nbdAddr)
	s1 := startSheep(t, "-z", "1", "--join", s0.Addr(), "--metrics", m1)
	waitNodes(t, s0, 2)
	s0.must(t, nil, "cluster", "format", "--copies=2")
	s0.must(t, nil, "vdi", "create", "m", "64M")

	before, _ := scrape(t, m0)
	peerBefore, _ := scrape(t, m1)
	if before["sheepdog_epoch"] < 1 || before["sheepdog_cluster_members"] != 2 || before["sheepdog_cluster_running"] != 1 {
		t.Fatalf("cluster gauges: epoch %v members %v running %v", before["sheepdog_epoch"],
			before["sheepdog_cluster_members"], before["sheepdog_cluster_running"])
	}

	// Native: collie writes 8 MiB (two data objects) and reads it back.
	const native = 8 << 20
	data := make([]byte, native)
	for i := range data {
		data[i] = byte(i * 7)
	}
	s0.must(t, data, "vdi", "write", "m", "0", strconv.Itoa(native))
	beforeRead, _ := scrape(t, m0)
	mustRead(t, s0, "m", data, "for the metrics") // reads the inode, then the data
	afterRead, _ := scrape(t, m0)
	// collie reads the inode's header and index (less than InodeSize),
	// then the data.
	k := `sheepdog_request_bytes_total{direction="out",frontend="native",op="read_obj"}`
	if d := afterRead[k] - beforeRead[k]; d < native || d > native+proto.InodeSize {
		t.Errorf("native read: %s moved by %.0f, want %d plus at most one inode (%d)", k, d, native, proto.InodeSize)
	}

	// NBD: 4 MiB written at 16 MiB, then read.
	uri := nbdURI(nbdAddr, "m")
	qemuIO(t, uri, "write -P 0x5a 16M 4M")
	qemuIO(t, uri, "read -P 0x5a 16M 4M")

	after, body := scrape(t, m0)
	peerAfter, _ := scrape(t, m1)

	w := `{direction="in",frontend="native",op="write_obj"}`
	cw := `{direction="in",frontend="native",op="create_and_write_obj"}`
	if d := after["sheepdog_request_bytes_total"+w] + after["sheepdog_request_bytes_total"+cw] -
		before["sheepdog_request_bytes_total"+w] - before["sheepdog_request_bytes_total"+cw]; d < native || d > native*1.01 {
		t.Errorf("native bytes written moved by %.0f, want %d (+1%%)", d, native)
	}
	within(t, "nbd write", before, after, `sheepdog_request_bytes_total{direction="in",frontend="nbd",op="write"}`, 4<<20)
	within(t, "nbd read", before, after, `sheepdog_request_bytes_total{direction="out",frontend="nbd",op="read"}`, 4<<20)
	for _, h := range []string{`sheepdog_request_duration_seconds_count{frontend="nbd",op="write"}`,
		`sheepdog_request_duration_seconds_count{frontend="native",op="read_obj"}`} {
		if after[h] <= before[h] {
			t.Errorf("%s did not move (%v -> %v)", h, before[h], after[h])
		}
	}
	// The second copy of every data byte reached s1 as peer writes.
	pw := `{direction="in",frontend="peer",op="write_peer"}`
	pcw := `{direction="in",frontend="peer",op="create_and_write_peer"}`
	if d := peerAfter["sheepdog_request_bytes_total"+pw] + peerAfter["sheepdog_request_bytes_total"+pcw] -
		peerBefore["sheepdog_request_bytes_total"+pw] - peerBefore["sheepdog_request_bytes_total"+pcw]; d < native+4<<20 {
		t.Errorf("peer bytes received moved by %.0f, want at least %d", d, native+4<<20)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// Objects: three data objects and the inode, both nodes (copies=2).
	time.Sleep(5100 * time.Millisecond)
	later, _ := scrape(t, m0)
	if got := later["sheepdog_objects"]; got != 4 {
		t.Errorf("sheepdog_objects = %v, want 4 (inode and three data objects)", got)
	}

	// Recovery: a third node joins and pulls its share of the copies; its
	// recovery gauges report the run.
	m2 := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	s2 := startSheep(t, "-z", "2", "--join", s0.Addr(), "--metrics", m2)
	waitNodes(t, s2, 3)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _ := scrape(t, m2)
		if r["sheepdog_epoch"] >= 2 && r["sheepdog_recovery_running"] == 0 && r["sheepdog_recovery_objects_done"] > 0 &&
			r["sheepdog_recovery_objects_done"] == r["sheepdog_recovery_objects"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the joiner's recovery gauges never reported a finished run: epoch %v running %v done %v of %v",
				r["sheepdog_epoch"], r["sheepdog_recovery_running"], r["sheepdog_recovery_objects_done"], r["sheepdog_recovery_objects"])
		}
		time.Sleep(100 * time.Millisecond)
	}

	// sheepfs: its own endpoint, volume reads and writes by dd.
	ms := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	mnt := mountSheepfs(t, s1, "--metrics", ms)
	fsBefore, _ := scrape(t, ms)
	if r := shell(t, mnt.Dir, "echo m > vdi/mount"); r.Code != 0 {
		t.Fatalf("mount volume: %s", r.Stderr)
	}
	vol := filepath.Join(mnt.Dir, "volume", "m")
	if r := run(t, nil, "dd", "if=/dev/zero", "of="+vol, "bs=1M", "count=2", "seek=32", "oflag=direct", "conv=notrunc,fsync"); r.Code != 0 {
		t.Fatalf("dd write: %s", r.Stderr)
	}
	if r := run(t, nil, "dd", "if="+vol, "of=/dev/null", "bs=1M", "count=2", "skip=32", "iflag=direct"); r.Code != 0 {
		t.Fatalf("dd read: %s", r.Stderr)
	}
	fsAfter, _ := scrape(t, ms)
	within(t, "sheepfs write", fsBefore, fsAfter, `sheepdog_request_bytes_total{direction="in",frontend="sheepfs",op="write"}`, 2<<20)
	within(t, "sheepfs read", fsBefore, fsAfter, `sheepdog_request_bytes_total{direction="out",frontend="sheepfs",op="read"}`, 2<<20)
	if k := `sheepdog_requests_total{frontend="sheepfs",op="fsync"}`; fsAfter[k] <= fsBefore[k] {
		t.Errorf("%s did not move", k)
	}
}
