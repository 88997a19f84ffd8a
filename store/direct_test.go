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

// With DirectIO, the aligned writes of 64 KiB or more (a create's data,
// writes into an existing object) go direct and the others through the
// page cache; everything reads back as written, verified, also after a
// flush and a reopen, and after a buffered write over a direct one.
// Without it nothing goes direct.
func TestDirectWrites(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	fd, err := unix.Open(probe, unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o644)
	if err != nil {
		t.Skipf("the test dir's filesystem has no O_DIRECT: %v", err)
	}
	unix.Close(fd)
	os.Remove(probe)

	const oid, size = 0x9, 4 << 20
	for _, direct := range []bool{true, false} {
		dir := t.TempDir()
		s := openStore(t, Config{Dir: dir, DirectIO: direct})
		model := make([]byte, size)
		write := func(off int64, data []byte, sync bool) {
			t.Helper()
			if err := s.CreateOrWrite(ctx, oid, size, off, data, sync); err != nil {
				t.Fatalf("direct %v: write [%d,+%d): %v", direct, off, len(data), err)
			}
			copy(model[off:], data)
		}
		write(1<<20, alignedRand(1<<20, 0), false)     // creates the object: direct
		write(2<<20, alignedRand(256<<10, 0), false)   // direct
		write(0, alignedRand(128<<10, 0), true)        // direct, synced
		write(2<<20+100, alignedRand(300, 0), false)   // small: buffered, over a direct write
		write(3<<20, alignedRand(128<<10, 512), false) // buffer not aligned: buffered
		write(3<<20+4096, alignedRand(64<<10, 0), false)
		want := uint64(4)
		if !direct {
			want = 0
		}
		if got := s.Stats().DirectWrites; got != want {
			t.Fatalf("direct %v: %d direct writes, want %d", direct, got, want)
		}
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("direct %v: content differs", direct)
		}
		s = flushedReopen(t, s, dir, oid, model)
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("direct %v: content differs after a reopen", direct)
		}
	}
}
