package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// flushPasses returns the object counts of the store flush passes a sheep
// has logged so far (debug level), across restarts.
func flushPasses(t *testing.T, s *Sheep) []int {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
	if err != nil {
		t.Fatal(err)
	}
	var n []int
	for _, m := range flushedLine.FindAllSubmatch(log, -1) {
		k, _ := strconv.Atoi(string(m[1]))
		n = append(n, k)
	}
	return n
}

var flushedLine = regexp.MustCompile(`msg=flushed objects=(\d+)`)

// TestNBDWriteBack: NBD behaves like a disk with a write cache
// (DESIGN.md "Durability"). Writes without FUA are acknowledged before
// they are synced, and an NBD FLUSH syncs exactly the objects they
// touched, on every copy; a FUA write is synced before its reply and
// leaves nothing to flush; a client that never flushes leaves its writes
// to the page cache. Everything written reads back after every sheep was
// killed with SIGKILL and restarted.
//
// A process kill does not lose the page cache, so the read-back cannot
// tell a synced write from an unsynced one: what the test asserts about
// syncing comes from the store's flush log (the objects each pass
// synced, which are exactly the objects written unsynced before it).
func TestNBDWriteBack(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy")
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startNBDCluster(t, 3, 3, addr, "-l", "level=debug")
	uri := nbdURI(addr, "bench")

	// qemu-io's default cache mode is writethrough (FUA on every write):
	// -t writeback sends plain WRITEs.
	wb := []string{"-t", "writeback"}

	// 8 MiB without FUA (two data objects and the inode), then FLUSH.
	qemuIOWith(t, wb, uri, "write -P 0x5a 0 8M", "flush")
	for i, s := range sheeps {
		if got := flushPasses(t, s); len(got) != 1 || got[0] != 3 {
			t.Fatalf("node %d flush passes %v, want one of 3 objects (every copy of the data objects and the inode)", i, got)
		}
	}

	// A FUA write is stable when acknowledged: the FLUSH qemu-io sends
	// when it closes finds nothing to sync.
	qemuIOWith(t, wb, uri, "write -f -P 0x77 8M 4M")
	for i, s := range sheeps {
		if got := flushPasses(t, s); len(got) != 1 {
			t.Fatalf("node %d flush passes %v after a FUA write, want still one", i, got)
		}
	}

	// nbdcopy sends no FLUSH unless asked to (qemu-io sends one when it
	// closes, whatever its cache mode): these writes stay unsynced.
	src := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0x33}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "nbdcopy", src, uri)
	for i, s := range sheeps {
		if got := flushPasses(t, s); len(got) != 1 {
			t.Fatalf("node %d flush passes %v without any FLUSH, want still one", i, got)
		}
	}

	for _, s := range sheeps {
		s.Kill()
	}
	for i, s := range sheeps {
		nbd := "none"
		if i == 0 {
			nbd = addr
		}
		s.start("-z", strconv.Itoa(i), "--nbd", nbd, "-l", "level=debug")
	}
	for _, s := range sheeps {
		waitRunning(t, s)
	}
	qemuIOWith(t, []string{"-r"}, uri,
		"read -P 0x33 0 4M", "read -P 0x5a 4M 4M", "read -P 0x77 8M 4M", "read -P 0 12M 4M")
}
