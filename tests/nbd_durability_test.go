package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
// (docs/design.md §7 "Durability"). Writes without FUA are acknowledged before
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
	parallel(t)
	needTools(t, "qemu-io", "nbdcopy")
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startNBDCluster(t, 3, 3, addr, "-l", "level=debug")
	uri := nbdURI(addr, "bench")
	passes := func(want []int, what string) {
		t.Helper()
		for i, s := range sheeps {
			if got := flushPasses(t, s); !slices.Equal(got, want) {
				t.Fatalf("node %d, %s: flush passes of %v objects, want %v", i, what, got, want)
			}
		}
	}

	// qemu-io's default cache mode is writethrough (FUA on every write):
	// -t writeback sends plain WRITEs.
	wb := []string{"-t", "writeback"}

	// The first write to an object creates it written back, and so is
	// its inode table entry (core/volume "Lazy allocation"): the FLUSH
	// syncs the two objects and the inode.
	qemuIOWith(t, wb, uri, "write -P 0x11 0 8M", "flush")
	passes([]int{3}, "after allocating two objects")

	// Overwrites of the two data objects, then FLUSH: both synced on
	// every copy by one pass.
	qemuIOWith(t, wb, uri, "write -P 0x5a 0 8M", "flush")
	passes([]int{3, 2}, "after overwriting them")

	// A FUA write is stable when acknowledged: the FLUSH qemu-io sends
	// when it closes finds nothing to sync.
	qemuIOWith(t, wb, uri, "write -f -P 0x77 4M 4M")
	passes([]int{3, 2}, "after a FUA write")

	// nbdcopy sends no FLUSH unless asked to (qemu-io sends one when it
	// closes, whatever its cache mode): these writes stay unsynced.
	src := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0x33}, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "nbdcopy", src, uri)
	passes([]int{3, 2}, "after writes without FLUSH")

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
		"read -P 0x33 0 2M", "read -P 0x5a 2M 2M", "read -P 0x77 4M 4M", "read -P 0 8M 4M")
}
