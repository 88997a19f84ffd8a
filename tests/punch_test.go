package tests

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// allocated is the space a file takes on disk (st_blocks), in bytes.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// needPunch skips the test unless the filesystem of dir frees the space
// of a punched hole.
func needPunch(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, "punch-probe")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte{1}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	before := allocated(t, path)
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		skipUnlessRequired(t, "the filesystem of %s cannot punch holes: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if after := allocated(t, path); before-after < 1<<20 {
		skipUnlessRequired(t, "the filesystem of %s punched a hole but kept its space (%d -> %d bytes)", dir, before, after)
	}
}

// TestNBDDiscardPunches: an NBD TRIM of part of an object (3 nodes,
// copies=3) punches a hole in every copy of it: the range reads as zeros
// through NBD and collie, the rest is intact, every copy takes about
// 2 MiB less space, and the copies still pass their checksums. Once a
// snapshot shares the object, the same discard copies it on write
// instead: the snapshot keeps its data and its copies their space.
func TestNBDDiscardPunches(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io", "nbdcopy")
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startNBDCluster(t, 3, 3, addr)
	needPunch(t, sheeps[0].Dir)
	uri := nbdURI(addr, "bench")

	want := make([]byte, 4<<20) // data object 0
	rand.Read(want)
	src := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "nbdcopy", "--flush", src, uri)

	paths := make([]string, len(sheeps))
	before := make([]int64, len(sheeps))
	for i, s := range sheeps {
		paths[i] = dataObject(t, s, 0)
		if before[i] = allocated(t, paths[i]); before[i] < 4<<20 {
			t.Fatalf("copy %s takes %d bytes after a 4 MiB write", paths[i], before[i])
		}
	}

	qemuIO(t, uri, "discard 1M 2M")
	clear(want[1<<20 : 3<<20])

	qemuIOWith(t, []string{"-r"}, uri, "read -P 0 1M 2M")
	nbd := dialNBD(t, addr, "bench")
	got, errno := nbd.read(0, uint32(len(want)))
	nbd.close()
	if errno != 0 || !bytes.Equal(got, want) {
		t.Fatalf("NBD reads other bytes than the discard left (errno %d)", errno)
	}
	for _, s := range sheeps {
		mustRead(t, s, "bench", want, "after the discard")
	}
	for i, s := range sheeps {
		if after := allocated(t, paths[i]); before[i]-after < 2<<20-64<<10 {
			t.Errorf("copy on %s: %d bytes before the discard, %d after; want about 2 MiB less", s.Addr(), before[i], after)
		}
	}
	if out := sheeps[1].must(t, nil, "vdi", "check", "bench"); out != "finish check&repair bench\n" {
		t.Fatalf("vdi check after the discard printed:\n%s", out)
	}

	// The snapshot now shares object 0: a discard in it leaves the shared
	// copies alone (the working VDI gets its own object, copied on write).
	sheeps[0].must(t, nil, "vdi", "snapshot", "-s", "shared", "bench")
	for i := range sheeps {
		before[i] = allocated(t, paths[i])
	}
	qemuIO(t, uri, "discard 0 512k", "read -P 0 0 512k")
	if got := sheeps[2].must(t, nil, "vdi", "read", "-s", "shared", "bench", "0", strconv.Itoa(len(want))); got != string(want) {
		t.Fatal("a discard in the working VDI changed the snapshot")
	}
	mine := bytes.Clone(want)
	clear(mine[:512<<10])
	mustRead(t, sheeps[2], "bench", mine, "after a discard of a shared object")
	for i, s := range sheeps {
		if after := allocated(t, paths[i]); after != before[i] {
			t.Errorf("the snapshot's copy on %s changed its size from %d to %d bytes", s.Addr(), before[i], after)
		}
	}
	if out := sheeps[0].must(t, nil, "vdi", "check", "bench"); out != "finish check&repair bench\n" {
		t.Fatalf("vdi check after the copy-on-write printed:\n%s", out)
	}
}
