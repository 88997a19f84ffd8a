package store

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// Partial writes into an object this store created partly written read
// back only the pages of their chunk that were written (none when there
// are none around the write), and the object verifies after each and
// reads back as written, before and after a reopen. After the reopen (no
// page set) a write reads its whole chunk back.
func TestWrittenPagesSkipTheReadBack(t *testing.T) {
	const oid, size = 0x7, 4 << 20
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	model := make([]byte, size)
	first := randBytes(4096)
	if err := s.CreateOrWrite(ctx, oid, size, ck+8192, first, false); err != nil { // chunk 1, page 2
		t.Fatal(err)
	}
	copy(model[ck+8192:], first)
	write := func(off int64, n int, sync bool) {
		t.Helper()
		data := randBytes(n)
		if err := s.WriteAt(ctx, oid, data, off, sync); err != nil {
			t.Fatalf("write [%d,+%d): %v", off, n, err)
		}
		copy(model[off:], data)
		if err := s.Verify(oid); err != nil {
			t.Fatalf("after write [%d,+%d): %v", off, n, err)
		}
	}
	pages := func(want uint64, what string) {
		t.Helper()
		if n := s.stats.readBacks.Swap(0); n != want {
			t.Fatalf("%s: %d pages read back, want %d", what, n, want)
		}
	}
	write(ck+8192, 4096, false) // the same page again: zeros around it
	pages(0, "a page rewritten between zeros")
	write(ck, 4096, true) // page 0 of chunk 1, page 2 holds data
	pages(1, "a write beside one written page")
	write(ck+4096+100, 10, false) // page 1, never written, between pages 0 and 2
	pages(2, "a write into a fresh page between two written ones")
	write(ck+3*4096, 4096, false) // page 3: pages 0-2 are one run
	pages(3, "a write after three written pages")
	for range 200 {
		off := rand.Int64N(size/4096) * 4096
		write(off, 4096, rand.IntN(4) == 0)
	}
	s = flushedReopen(t, s, dir, oid, model)
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
		t.Fatal("content differs after reopen")
	}
	write(ck+3*4096, 4096, true)
	pages(ck/4096, "a write after a reopen")
}

// A page never written that changes behind the store's back (a failing
// disk) is not blessed by a write beside it that skipped the read-back:
// the chunk fails its next read, as it would have before the write.
func TestWrittenPagesDoNotBlessACorruptNeighbour(t *testing.T) {
	const oid, size = 0x8, 4 << 20
	s := openStore(t, Config{Dir: t.TempDir()})
	if err := s.CreateOrWrite(ctx, oid, size, 0, randBytes(4096), true); err != nil {
		t.Fatal(err)
	}
	flipByte(t, s.objPath(oid), 5*ck+3*4096+7)
	if err := s.WriteAt(ctx, oid, randBytes(4096), 5*ck, true); err != nil {
		t.Fatal(err)
	}
	if n := s.stats.readBacks.Load(); n != 0 {
		t.Fatalf("%d chunks read back, want 0", n)
	}
	wantChecksum(t, s.ReadAt(ctx, oid, make([]byte, 4096), 5*ck))
	if err := s.ReadAt(ctx, oid, make([]byte, 4096), 4*ck); err != nil {
		t.Fatalf("another chunk: %v", err)
	}
}

// flushedReopen checks that oid reads as model, flushes and closes s,
// and returns the store opened again on dir.
func flushedReopen(t *testing.T, s *Store, dir string, oid uint64, model []byte) *Store {
	t.Helper()
	if got := mustRead(t, s, oid, 0, len(model)); !bytes.Equal(got, model) {
		t.Fatal("content differs")
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return openStore(t, Config{Dir: dir})
}

func TestPageSet(t *testing.T) {
	if p := newPageSet(4<<20, 0, 4<<20); p != nil {
		t.Error("a set for an object written whole")
	}
	if p := newPageSet(writtenMaxPages*writtenPage+1, 0, 1); p != nil {
		t.Error("a set for an object over the bound")
	}
	p := newPageSet(1<<20, 5000, 10) // page 1
	for _, c := range []struct {
		off, n int64
		want   bool
	}{{0, 4096, true}, {0, 4097, false}, {8192, 4096, true}, {4095, 2, false}, {9000, 0, true}} {
		if got := p.zero(c.off, c.n); got != c.want {
			t.Errorf("zero(%d, %d) = %v, want %v", c.off, c.n, got, c.want)
		}
	}
	var none pageSet
	if none.zero(0, 1) || !none.zero(0, 0) {
		t.Error("a nil set knows nothing but empty ranges")
	}
	none.add(0, 10) // no panic
}
