package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// ck is the chunk size of the small objects these tests use.
const ck = 1 << minChunkShift

// flipByte changes one byte of the object file behind the store's back,
// as a failing disk would, leaving the xattr alone.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantChecksum fails unless err is a checksum error that answers EIO.
func wantChecksum(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("error %v: want ErrChecksum", err)
	}
	wantResult(t, err, proto.ResEIO)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return b
}

// A flipped byte is never read back: reads, writes into its chunk,
// Verify and SHA1 fail with ErrChecksum, other chunks still read, and
// Repair puts the good bytes back.
func TestFlippedByteIsDetectedAndRepaired(t *testing.T) {
	const oid, size = 0x77, 5*ck + 1234 // a short last chunk
	s := openStore(t, Config{})
	good := randBytes(size)
	bad := int64(2*ck + 100)
	good[bad] = 1 // flipped, 0x5b: never what a cleared buffer holds
	mustCreate(t, s, oid, size, 0, good)
	flipByte(t, s.objPath(oid), bad)

	for _, r := range []struct{ off, n int64 }{
		{bad, 1},              // the byte itself
		{bad - 50, 4096},      // inside its chunk
		{0, size},             // the whole object
		{1 * ck, 3 * ck},      // whole chunks, read straight into buf
		{2*ck - 10, 1*ck + 1}, // spanning into it
	} {
		buf := make([]byte, r.n)
		err := s.ReadAt(ctx, oid, buf, r.off)
		wantChecksum(t, err)
		if buf[bad-r.off] == good[bad]^0x5a {
			t.Fatalf("read [%d,+%d) left the bad byte in buf", r.off, r.n)
		}
	}
	if got := mustRead(t, s, oid, 4*ck, size-4*ck); !bytes.Equal(got, good[4*ck:]) {
		t.Fatal("a good chunk reads wrong")
	}
	wantChecksum(t, s.Verify(oid))
	_, err := s.SHA1(oid)
	wantChecksum(t, err)
	wantChecksum(t, s.WriteAt(ctx, oid, []byte("x"), 2*ck, true))
	wantChecksum(t, s.Punch(ctx, oid, 2*ck+5, 10, true))

	n, err := s.Repair(ctx, oid, good)
	if err != nil || n != 1 {
		t.Fatalf("Repair = %d, %v; want 1 chunk", n, err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("object differs from the good copy after Repair")
	}
	if n, err := s.Repair(ctx, oid, good); err != nil || n != 0 {
		t.Fatalf("second Repair = %d, %v; want 0", n, err)
	}
	// A fresh store reads the repaired checksums from the xattr.
	s2 := openStore(t, Config{Dir: s.Dir()})
	if err := s2.Verify(oid); err != nil {
		t.Fatal(err)
	}
}

// WriteAt and Punch at every kind of offset keep the object verifiable,
// in memory and from the xattr after a reopen.
func TestWritesKeepChecksums(t *testing.T) {
	const oid, size = 0x88, 4*ck + 4664
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	model := make([]byte, size)
	copy(model[1000:], randBytes(3000))
	mustCreate(t, s, oid, size, 1000, model[1000:4000])
	for i, op := range []struct {
		off, n int64
		punch  bool
	}{
		{0, 1 * ck, false},               // one whole chunk
		{100, 50, false},                 // inside a chunk
		{1*ck - 7, 14, false},            // across a boundary
		{1*ck + 3, 2*ck + 9, false},      // partial, whole, partial
		{size - 4664, 4664, false},       // the short last chunk, whole
		{size - 10, 10, false},           // its end
		{3 * ck, 1 * ck, true},           // punch a whole chunk
		{1*ck - 100, 1*ck + 200, true},   // punch across chunks
		{0, size, false},                 // everything
		{size - 4664 - 1, 2, true},       // punch across the last boundary
		{5, 1, false},                    // one byte
		{2 * ck, size - 2*ck - 1, false}, // up to one byte before the end
	} {
		if op.punch {
			if err := s.Punch(ctx, oid, op.off, op.n, true); err != nil {
				t.Fatalf("op %d: %v", i, err)
			}
			clear(model[op.off : op.off+op.n])
		} else {
			data := randBytes(int(op.n))
			if err := s.WriteAt(ctx, oid, data, op.off, true); err != nil {
				t.Fatalf("op %d: %v", i, err)
			}
			copy(model[op.off:], data)
		}
		if err := s.Verify(oid); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("op %d: content differs", i)
		}
	}
	s.Close()
	s2 := openStore(t, Config{Dir: dir})
	if err := s2.Verify(oid); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s2, oid, 0, size); !bytes.Equal(got, model) {
		t.Fatal("content differs after reopen")
	}
}

// A partial write into a chunk never written is hashed as the write
// between zeros, without reading the chunk: the object verifies, with and
// without sync, in memory and after a reopen. A never-written chunk whose
// bytes changed behind the store's back is not blessed by such a write:
// its next read still fails.
func TestPartialWriteIntoFreshChunk(t *testing.T) {
	const oid, size = 0xaa, 6 * ck
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	model := make([]byte, size)
	mustCreate(t, s, oid, size, 0, nil)
	for i, w := range []struct {
		off, n int64
		sync   bool
	}{
		{100, 4096, true},          // inside chunk 0
		{1*ck + ck/2, 4096, false}, // inside chunk 1, write-back
		{2*ck - 10, 20, true},      // chunk 1 (now written) into fresh chunk 2
		{4*ck + 1, 1, false},       // one byte of chunk 4
	} {
		data := randBytes(int(w.n))
		if err := s.WriteAt(ctx, oid, data, w.off, w.sync); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		copy(model[w.off:], data)
		if err := s.Verify(oid); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := s.Punch(ctx, oid, 3*ck+5, 100, true); err != nil { // a fresh chunk punched
		t.Fatal(err)
	}
	s = flushedReopen(t, s, dir, oid, model)
	if err := s.Verify(oid); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
		t.Fatal("content differs after reopen")
	}

	// Chunk 5 was never written; a disk changes a byte of it.
	s.Close()
	flipByte(t, s.objPath(oid), 5*ck+10)
	s = openStore(t, Config{Dir: dir})
	if err := s.WriteAt(ctx, oid, []byte("xyz"), 5*ck+1000, true); err != nil {
		t.Fatal(err)
	}
	wantChecksum(t, s.ReadAt(ctx, oid, make([]byte, 10), 5*ck))
}

// A sparse Create stores the known checksum of a zero chunk for its holes.
func TestSparseCreateChecksums(t *testing.T) {
	const oid, size = 0x99, 4 << 20
	s := openStore(t, Config{})
	mustCreate(t, s, oid, size, 1*ck+5, []byte("hello")) // in chunk 1
	m := newSums(size, maxChunks)
	n, err := unix.Getxattr(s.objPath(oid), sumAttr, m.b)
	if err != nil || m.valid(n) != nil {
		t.Fatalf("xattr: %d bytes, %v, %v", n, err, m.valid(n))
	}
	if m.n != 256 || m.shift != 14 {
		t.Fatalf("%d chunks of 2^%d, want 256 of 2^14", m.n, m.shift)
	}
	zero := uint32(xxh3.Hash(make([]byte, ck)))
	for i := range m.n {
		if i != 1 && m.cur(i) != zero {
			t.Fatalf("chunk %d: checksum %#x, want the zero chunk's %#x", i, m.cur(i), zero)
		}
	}
	chunk := make([]byte, ck)
	copy(chunk[5:], "hello")
	if m.cur(1) != uint32(xxh3.Hash(chunk)) {
		t.Fatal("chunk 1 has the wrong checksum")
	}
}

// The chunk size grows with the object so the xattr stays small.
func TestChunkShift(t *testing.T) {
	for _, tc := range []struct {
		size  int64
		shift uint8
		n     int
	}{
		{0, 14, 0}, {1, 14, 1}, {4 << 20, 14, 256}, {4<<20 + 1, 15, 129},
		{proto.InodeSize, 16, 193}, {16 << 20, 16, 256}, {1 << 31, 23, 256},
	} {
		m := newSums(tc.size, maxChunks)
		if m.shift != tc.shift || m.n != tc.n {
			t.Errorf("size %d: %d chunks of 2^%d, want %d of 2^%d", tc.size, m.n, m.shift, tc.n, tc.shift)
		}
	}
}

// An object without the xattr (from before checksums, or copied in by
// hand) gets checksums of its bytes when opened; a damaged xattr makes
// the copy bad until Repair replaces it.
func TestMissingAndDamagedXattr(t *testing.T) {
	const oid, size = 0xaa, 3*ck + 10
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	good := randBytes(size)
	mustCreate(t, s, oid, size, 0, good)
	s.Close()
	if err := unix.Removexattr(s.objPath(oid), sumAttr); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{Dir: dir})
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("content differs")
	}
	if _, err := unix.Getxattr(s.objPath(oid), sumAttr, make([]byte, 64<<10)); err != nil {
		t.Fatalf("checksums not stored on adoption: %v", err)
	}
	s.Close()

	if err := unix.Setxattr(s.objPath(oid), sumAttr, []byte{1, 16, 0, 0}, 0); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{Dir: dir})
	wantChecksum(t, s.ReadAt(ctx, oid, make([]byte, 10), 0))
	wantChecksum(t, s.WriteAt(ctx, oid, make([]byte, 10), 0, false))
	if n, err := s.Repair(ctx, oid, good); err != nil || n != 4 {
		t.Fatalf("Repair = %d, %v; want the whole object (4 chunks)", n, err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("content differs after Repair")
	}
}

// A write whose data never reached the file (the process died between the
// xattr and the data) leaves a chunk that still verifies, against prev.
func TestLostDataWriteStillVerifies(t *testing.T) {
	const oid, size = 0xbb, 2 * ck
	s := openStore(t, Config{})
	old := randBytes(size)
	mustCreate(t, s, oid, size, 0, old)
	if err := s.WriteAt(ctx, oid, randBytes(100), 1*ck+50, false); err != nil {
		t.Fatal(err)
	}
	// Put the old bytes back behind the store's back: as if the data
	// write had not happened.
	f, err := os.OpenFile(s.objPath(oid), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(old[1*ck:], 1*ck)
	f.Close()
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, old) {
		t.Fatal("content differs")
	}
	if err := s.Verify(oid); err != nil {
		t.Fatal(err)
	}
}

// Concurrent writers and readers of the same chunks: readers never see a
// checksum error, and the object verifies afterwards.
func TestConcurrentWritesAndReadsOfOneChunk(t *testing.T) {
	const oid, size = 0xcc, 3 * ck
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, oid, size, 0, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 5000)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.ReadAt(ctx, oid, buf, rand.Int64N(size-5000)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var ww sync.WaitGroup
	for w := 0; w < 8; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			data := bytes.Repeat([]byte{byte(w + 1)}, 3000)
			for i := 0; i < 200; i++ {
				off := rand.Int64N(size - 3000)
				var err error
				if i%5 == 4 {
					err = s.Punch(ctx, oid, off, 3000, false)
				} else {
					err = s.WriteAt(ctx, oid, data, off, false)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	if err := s.Verify(oid); err != nil {
		t.Fatal(err)
	}
}

// A stale copy is verified when read back.
func TestReadStaleVerifies(t *testing.T) {
	const oid, size = 0xdd, 2*ck + 3
	s := openStore(t, Config{})
	good := randBytes(size)
	mustCreate(t, s, oid, size, 0, good)
	if err := s.MoveToStale(oid, 4); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadStale(oid, 4); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("ReadStale: %v", err)
	}
	flipByte(t, s.stalePath(oid, 4), size-1)
	_, err := s.ReadStale(oid, 4)
	wantChecksum(t, err)
}

// A sync after a checksum change is an fsync; the flag that says so is
// cleared by it.
func TestSyncAfterChecksumChange(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1*ck, 0, nil)
	if err := s.WriteAt(ctx, 1, []byte("abc"), 10, false); err != nil {
		t.Fatal(err)
	}
	h, err := s.files.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.files.release(h)
	if !h.metaDirty.Load() {
		t.Fatal("a checksum change did not mark the xattr dirty")
	}
	if err := s.Sync(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if h.metaDirty.Load() {
		t.Fatal("Sync left the xattr dirty")
	}
}

// An object keeps the geometry it was written with: one written by a
// store limited to small xattrs (64 chunks) reads, verifies and takes
// writes in a store without that limit, whose new objects get 256 chunks.
func TestChecksumGeometryTravelsWithTheObject(t *testing.T) {
	const size = 4 << 20
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	s.maxChunks = 64
	data := randBytes(size)
	mustCreate(t, s, 1, size, 0, data)
	s.Close()

	s = openStore(t, Config{Dir: dir})
	if s.maxChunks != maxChunks {
		t.Fatalf("maxChunks %d, want %d", s.maxChunks, maxChunks)
	}
	if got := mustRead(t, s, 1, 0, size); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if err := s.WriteAt(ctx, 1, []byte("hello"), 70<<10, true); err != nil {
		t.Fatal(err)
	}
	copy(data[70<<10:], "hello")
	mustCreate(t, s, 2, size, 0, data)
	for oid, shift := range map[uint64]uint8{1: 16, 2: 14} {
		if err := s.Verify(oid); err != nil {
			t.Fatal(err)
		}
		v := make([]byte, maxSumLen)
		n, err := unix.Getxattr(s.objPath(oid), sumAttr, v)
		m, derr := decodeSums(size, v[:n])
		if err != nil || derr != nil || m.shift != shift {
			t.Fatalf("object %d: %v, %v; want chunks of 2^%d", oid, err, derr, shift)
		}
	}
	s.Close()
	flipByte(t, s.objPath(1), 100<<10)
	s = openStore(t, Config{Dir: dir})
	wantChecksum(t, s.Verify(1))
}

// decodeSums takes the geometry from the value and refuses any that does
// not describe the object.
func TestDecodeSumsGeometry(t *testing.T) {
	const size = 4 << 20
	for _, tc := range []struct {
		name string
		v    []byte
		ok   bool
	}{
		{"256 chunks", sumsFor(size, 0, nil, 256).b, true},
		{"64 chunks", sumsFor(size, 0, nil, 64).b, true},
		{"16 chunks", sumsFor(size, 0, nil, 16).b, true},
		{"of another size", sumsFor(size/2, 0, nil, 64).b, false},
		{"chunks below 16 KiB", newSumsShift(size, 13).b, false},
		{"truncated", sumsFor(size, 0, nil, 64).b[:100], false},
		{"header only", sumsFor(size, 0, nil, 64).b[:sumHeaderSize], false},
		{"short", []byte{2, 16}, false},
		{"huge shift", []byte{2, 60, 0, 0, 1, 0, 0, 0}, false},
	} {
		_, err := decodeSums(size, tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
