package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alignedRand returns n random bytes in a buffer aligned for O_DIRECT,
// at byte skew from that alignment.
func alignedRand(n, skew int) []byte {
	b := make([]byte, n+2*directAlign)
	a := int(uintptr(unsafe.Pointer(&b[0])) % directAlign)
	p := b[directAlign-a+skew:][:n]
	copy(p, randBytes(n))
	return p
}

// needDirect skips t where the test dir's filesystem refuses O_DIRECT.
func needDirect(t *testing.T) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "probe")
	fd, err := unix.Open(probe, unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o644)
	if err != nil {
		t.Skipf("the test dir's filesystem has no O_DIRECT: %v", err)
	}
	unix.Close(fd)
	os.Remove(probe)
}

// The aligned writes of 64 KiB or more go direct as the mode says:
// DirectAll every one, DirectFresh those where nothing was written yet (a
// create's data, writes into never-written chunks), DirectOff none; the
// others go through the page cache. Everything reads back as written,
// verified, also after a flush and a reopen, and after a buffered write
// over a direct one.
func TestDirectWrites(t *testing.T) {
	needDirect(t)

	const oid, size = 0x9, 4 << 20
	for _, direct := range []DirectMode{DirectAll, DirectFresh, DirectOff} {
		dir := t.TempDir()
		s := openStore(t, Config{Dir: dir, Direct: direct})
		model := make([]byte, size)
		var fresh, all uint64 // direct writes expected in each mode
		write := func(off int64, data []byte, sync bool, inFresh, inAll bool) {
			t.Helper()
			if err := s.CreateOrWrite(ctx, oid, size, off, data, sync); err != nil {
				t.Fatalf("%v: write [%d,+%d): %v", direct, off, len(data), err)
			}
			copy(model[off:], data)
			fresh, all = fresh+b2u(inFresh), all+b2u(inAll)
		}
		write(1<<20, alignedRand(1<<20, 0), false, true, true)   // creates the object
		write(2<<20, alignedRand(256<<10, 0), false, true, true) // into never-written chunks
		write(0, alignedRand(128<<10, 0), true, true, true)      // synced
		write(2<<20+100, alignedRand(300, 0), false, false, false)
		write(3<<20, alignedRand(128<<10, 512), false, false, false)  // buffer not aligned
		write(3<<20+4096, alignedRand(64<<10, 0), false, false, true) // its first chunk was written
		write(1<<20, alignedRand(1<<20, 0), false, false, true)       // an overwrite
		want := map[DirectMode]uint64{DirectAll: all, DirectFresh: fresh, DirectOff: 0}[direct]
		if got := s.Stats().DirectWrites; got != want {
			t.Fatalf("%v: %d direct writes, want %d", direct, got, want)
		}
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("%v: content differs", direct)
		}
		s = flushedReopen(t, s, dir, oid, model)
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("%v: content differs after a reopen", direct)
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// A new data object's data goes direct as its runs of non-zero pages:
// the zeros between them are not written (recovery copying in a mostly
// zero object writes its data, not its zeros), runs under directMin go
// through the page cache, and the object reads back whole.
func TestDirectCreateSkipsZeros(t *testing.T) {
	needDirect(t)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	const oid, size = 0xa, 4 << 20
	data := alignedRand(size, 0)
	clear(data[128<<10 : size-128<<10])      // 128 KiB, zeros, 128 KiB: two direct writes
	clear(data[64<<10 : 64<<10+directAlign]) // a zero page splits the first run into 64 KiB and 60 KiB
	mustCreate(t, s, oid, size, 0, data)
	if got := s.Stats().DirectWrites; got != 2 {
		t.Fatalf("%d direct writes, want 2 (the 64 KiB and 128 KiB runs; the 60 KiB one buffered)", got)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}
