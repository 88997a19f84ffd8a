package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLogLevel: `node log level set` changes what the running sheep logs
// at once; `get` reads it back in dog's words and `list` prints dog's
// table (both on stderr, as dog's sd_info).
func TestLogLevel(t *testing.T) {
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
	sheeps := startCluster(t, 2)
	gw, other := sheeps[0], sheeps[1]
	gw.must(t, nil, "cluster", "format", "--copies=2")

	out := gw.must(t, nil, "node", "stat")
	lines := strings.Split(out, "\n")
	if len(lines) != 4 || lines[0] != "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD" ||
		!strings.HasPrefix(lines[1], "Client\t") || !strings.HasPrefix(lines[2], "Peer\t") || lines[3] != "" {
		t.Fatalf("node stat printed %q", out)
	}
	if r := gw.collie(t, nil, "node", "stat", "-w"); r.Code == 0 || !strings.Contains(r.Stderr, "invalid option -- 'w'") {
		t.Fatalf("node stat -w: exit %d, stderr %q; want it refused", r.Code, r.Stderr)
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
