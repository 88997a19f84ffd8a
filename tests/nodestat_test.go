package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLogLevel: `node log level set` changes what the running sheep logs
// at once; `get` reads it back in dog's words and `list` prints dog's
// table (both on stderr, as dog's sd_info).
func TestLogLevel(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	logLevel := func(args ...string) string {
		t.Helper()
		r := s.collie(t, nil, append([]string{"node", "log", "level"}, args...)...)
		if r.Code != 0 || r.Stdout != "" {
			t.Fatalf("node log level %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
		}
		return r.Stderr
	}
	// GET_LOGLEVEL logs "returning log level" at debug: the count of those
	// lines in sheep.log shows whether debug records are written.
	debugLines := func() int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "returning log level")
	}

	if got := logLevel("list"); got != "emerg\t(0)\nalert\t(1)\ncrit\t(2)\nerr\t(3)\nwarning\t(4)\nnotice\t(5)\ninfo\t(6)\ndebug\t(7)\n" {
		t.Fatalf("list printed %q", got)
	}
	if got := logLevel("get"); got != "info (6)\n" {
		t.Fatalf("default level: %q, want info (6)", got)
	}
	if n := debugLines(); n != 0 {
		t.Fatalf("%d debug lines at level info", n)
	}
	logLevel("set", "debug")
	if got := logLevel("get"); got != "debug (7)\n" {
		t.Fatalf("after set debug: %q", got)
	}
	if n := debugLines(); n != 1 {
		t.Fatalf("after set debug, the get wrote %d debug lines, want 1", n)
	}
	b, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
	if !strings.Contains(string(b), "level=DEBUG msg=\"returning log level\"") {
		t.Fatalf("sheep.log has no DEBUG record:\n%s", b)
	}
	logLevel("set", "warning")
	if got := logLevel("get"); got != "warning (4)\n" {
		t.Fatalf("after set warning: %q", got)
	}
	if n := debugLines(); n != 1 {
		t.Fatalf("debug lines written at level warning: %d, want still 1", n)
	}
	// Levels slog has no match for read back as the one that logs the same.
	logLevel("set", "notice")
	if got := logLevel("get"); got != "info (6)\n" {
		t.Fatalf("after set notice: %q, want info (6)", got)
	}
	logLevel("set", "emerg")
	if got := logLevel("get"); got != "err (3)\n" {
		t.Fatalf("after set emerg: %q, want err (3)", got)
	}

	r := s.collie(t, nil, "node", "log", "level", "set", "loud")
	if r.Code == 0 || !strings.HasPrefix(r.Stderr, "invalid loglevel: loud\navailable loglevels:\nemerg\t(0)\n") {
		t.Fatalf("set loud: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if got := logLevel("get"); got != "err (3)\n" {
		t.Fatalf("a refused set changed the level: %q", got)
	}
}

// nodeStat reads `node stat -r` through s: the client and peer rows, each
// active, total, read, write, remove, flush, bytes in, bytes out (dog's
// order of the values, whatever its header says).
func nodeStat(t *testing.T, s *Sheep) (client, peer [8]uint64) {
	t.Helper()
	out := s.must(t, nil, "node", "stat", "-r")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("node stat -r printed %q, want two rows", out)
	}
	for i, row := range []*[8]uint64{&client, &peer} {
		f := strings.Split(lines[i], "\t")
		if len(f) != 8 {
			t.Fatalf("node stat -r row %q has %d fields, want 8", lines[i], len(f))
		}
		for j := range f {
			v, err := strconv.ParseUint(f[j], 10, 64)
			if err != nil {
				t.Fatalf("node stat -r row %q: %v", lines[i], err)
			}
			row[j] = v
		}
	}
	return client, peer
}

// Columns of nodeStat's rows.
const (
	statActive = iota
	statTotal
	statRead
	statWrite
	statRemove
	statFlush
	statRx
	statTx
)

// TestNodeStat: data written and read through one sheep of two (two
// copies) moves its client counters, and the other's peer counters, by at
// least what was moved; the table is dog's.
func TestNodeStat(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	gw, other := sheeps[0], sheeps[1]
	gw.must(t, nil, "cluster", "format", "--copies=2")

	out := gw.must(t, nil, "node", "stat")
	lines := strings.Split(out, "\n")
	if len(lines) != 4 || lines[0] != "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD" ||
		!strings.HasPrefix(lines[1], "Client\t") || !strings.HasPrefix(lines[2], "Peer\t") || lines[3] != "" {
		t.Fatalf("node stat printed %q", out)
	}

	gw0, _ := nodeStat(t, gw)
	_, peer0 := nodeStat(t, other)
	const size = 8 << 20 // two 4 MiB objects
	data := seedVdi(t, gw, "stat", size)
	mustRead(t, gw, "stat", data, "for node stat")
	gw1, _ := nodeStat(t, gw)
	_, peer1 := nodeStat(t, other)

	atLeast := func(what string, before, after [8]uint64, col int, want uint64) {
		t.Helper()
		if after[col] < before[col] || after[col]-before[col] < want {
			t.Errorf("%s moved from %d to %d, want at least +%d", what, before[col], after[col], want)
		}
	}
	atLeast("client writes", gw0, gw1, statWrite, 2)
	atLeast("client reads", gw0, gw1, statRead, 2)
	atLeast("client requests", gw0, gw1, statTotal, 4)
	atLeast("client bytes in", gw0, gw1, statRx, size)
	atLeast("client bytes out", gw0, gw1, statTx, size)
	atLeast("peer writes", peer0, peer1, statWrite, 2)
	atLeast("peer requests", peer0, peer1, statTotal, 2)
	atLeast("peer bytes in", peer0, peer1, statRx, size)
	if gw1[statActive] != 0 || peer1[statActive] != 0 {
		t.Errorf("requests still active after the commands: client %d, peer %d", gw1[statActive], peer1[statActive])
	}
}

// TestNodeStatWatch: `node stat -w` prints a sample every second until it
// is stopped; the per-interval columns (WRBW, RPS) add up to what was
// written between the first and the last sample.
func TestNodeStatWatch(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "--copies=1")
	s.must(t, nil, "vdi", "create", "watch", "16M")
	var out bytes.Buffer
	cmd := exec.Command(bin("collie"), "node", "stat", "-w", "-r", "-p", strconv.Itoa(s.Port))
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(1500 * time.Millisecond) // two samples before the write
	const size = 8 << 20
	data := make([]byte, size)
	s.must(t, data, "vdi", "write", "watch", "0", strconv.Itoa(size))
	time.Sleep(2500 * time.Millisecond) // the write falls in a sampled interval
	cmd.Process.Kill()
	cmd.Wait()

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 6 || len(lines)%2 != 0 {
		t.Fatalf("node stat -w -r printed %d lines, want at least 3 samples of 2:\n%s", len(lines), out.String())
	}
	var wrbw, rps uint64
	for i, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 11 {
			t.Fatalf("line %d has %d fields, want 11: %q", i, len(f), l)
		}
		if i%2 != 0 { // peer row
			continue
		}
		n, err1 := strconv.ParseUint(f[8], 10, 64)
		r, err2 := strconv.ParseUint(f[10], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("line %d: WRBW %q RPS %q not decimal", i, f[8], f[10])
		}
		if i == 0 && (n != 0 || r != 0) {
			t.Fatalf("first sample has WRBW %d RPS %d, want zeros", n, r)
		}
		wrbw += n
		rps += r
	}
	if wrbw < size || rps < 2 {
		t.Fatalf("watch saw %d bytes written in %d requests, want at least %d bytes in 2 requests:\n%s", wrbw, rps, size, out.String())
	}
}
