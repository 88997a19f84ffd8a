package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"golang.org/x/sys/unix"
)

// spanRecorder is an io.WriterAt that records the writes it is given and
// fails the one numbered failAt (from 1; 0 never).
type spanRecorder struct {
	writes [][2]int64 // off, len
	failAt int
}

func (r *spanRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, [2]int64{off, int64(len(p))})
	if len(r.writes) == r.failAt {
		return 0, errors.New("injected")
	}
	return len(p), nil
}

func TestWriteSpansSplitsAtSpanBoundaries(t *testing.T) {
	const S = writeSpan
	tests := []struct {
		name string
		off  int64
		n    int64
		want [][2]int64
	}{
		{"small inside a span", 4096, 4096, [][2]int64{{4096, 4096}}},
		{"one whole span", S, S, [][2]int64{{S, S}}},
		{"crosses one boundary", S - 4096, 8192, [][2]int64{{S - 4096, 4096}, {S, 4096}}},
		{"1 MiB aligned", 0, 1 << 20, spans(0, 1<<20/S, S)},
		{"1 MiB unaligned", 512, 1 << 20, append(append([][2]int64{{512, S - 512}}, spans(S, 1<<20/S-1, S)...), [2]int64{1 << 20, 512})},
		{"empty", 100, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r spanRecorder
			if err := writeSpans(&r, make([]byte, tt.n), tt.off); err != nil {
				t.Fatal(err)
			}
			if len(r.writes) != len(tt.want) {
				t.Fatalf("writes %v, want %v", r.writes, tt.want)
			}
			for i := range tt.want {
				if r.writes[i] != tt.want[i] {
					t.Fatalf("write %d is %v, want %v (all: %v)", i, r.writes[i], tt.want[i], r.writes)
				}
			}
		})
	}
}

func spans(off int64, n int, size int64) [][2]int64 {
	var s [][2]int64
	for i := 0; i < n; i++ {
		s = append(s, [2]int64{off + int64(i)*size, size})
	}
	return s
}

func TestWriteSpansStopsAtFirstError(t *testing.T) {
	r := spanRecorder{failAt: 2}
	if err := writeSpans(&r, make([]byte, 3*writeSpan), 0); err == nil {
		t.Fatal("no error from a failed piece")
	}
	if len(r.writes) != 2 {
		t.Fatalf("%d writes after the failure at the 2nd, want 2", len(r.writes))
	}
}

func TestWriteSpansBytesLandInPlace(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 3*writeSpan+1000)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	const off = writeSpan - 300
	if err := writeSpans(f, data, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes read back differ from those written")
	}
}

// TestWriteBufferedCachedOrNot: allCached tells a range whose pages are
// all in the page cache from one dropped from it, and writeBuffered puts
// the bytes in place either way (one pwrite, or spans).
func TestWriteBufferedCachedOrNot(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	const n = 16 * writeSpan
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*13 + i>>11)
	}
	if err := writeSpans(f, data, 0); err != nil {
		t.Fatal(err)
	}
	if !allCached(fd, 0, n) {
		if noCachestat.Load() {
			t.Skip("no cachestat(2) on this kernel: every write goes as spans")
		}
		t.Fatal("a range just written is not all cached")
	}
	if allCached(fd, n-writeSpan, 2*writeSpan) {
		t.Error("a range reaching past the end of the file is all cached")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, n, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if allCached(fd, 0, n) {
		t.Skip("this filesystem keeps its pages after FADV_DONTNEED (tmpfs?)")
	}
	// Uncached, then cached: new bytes land in place both times.
	for round := range 2 {
		for i := range data {
			data[i] ^= byte(0x5a + round)
		}
		const off = writeSpan - 4096
		if err := writeBuffered(f, fd, data[:n-writeSpan], off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n-writeSpan)
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[:n-writeSpan]) {
			t.Fatalf("round %d: bytes read back differ from those written", round)
		}
	}
}

// TestWriteFreshSpansSkipsZeros: only the runs of non-zero pages are
// written.
func TestWriteFreshSpansSkipsZeros(t *testing.T) {
	const S = writeSpan
	data := make([]byte, 4*S)
	data[10] = 1    // span 0: data
	data[2*S+5] = 2 // span 2: data; spans 1 and 3 zero
	var r spanRecorder
	if err := writeFreshSpans(&r, data, S); err != nil {
		t.Fatal(err)
	}
	// only the 4 KiB pages with data
	if want := [][2]int64{{S, 4096}, {3 * S, 4096}}; !slices.Equal(r.writes, want) {
		t.Errorf("writes %v, want %v", r.writes, want)
	}
	for _, c := range []struct {
		name    string
		off, n  int64
		nonzero []int64    // offsets in p of nonzero bytes
		runs    [][2]int64 // lo, hi
	}{
		{"all zero", 0, 8192, nil, nil},
		{"one byte mid-page", 0, 3 * 4096, []int64{5000}, [][2]int64{{4096, 8192}}},
		{"unaligned span", 100, 8192, []int64{0}, [][2]int64{{0, 3996}}},
		{"both ends", 0, 4 * 4096, []int64{1, 4*4096 - 1}, [][2]int64{{0, 4096}, {3 * 4096, 4 * 4096}}},
		{"adjacent pages join", 4096, 4 * 4096, []int64{4095, 4096, 3 * 4096}, [][2]int64{{0, 2 * 4096}, {3 * 4096, 4 * 4096}}},
	} {
		p := make([]byte, c.n)
		for _, i := range c.nonzero {
			p[i] = 1
		}
		var runs [][2]int64
		nonZeroRuns(p, c.off, func(lo, hi int64) error { runs = append(runs, [2]int64{lo, hi}); return nil })
		if !slices.Equal(runs, c.runs) {
			t.Errorf("%s: nonZeroRuns = %v, want %v", c.name, runs, c.runs)
		}
	}
}

// TestCreateMostlyZeros: an object created whole with mostly zeros reads
// back as it was given, verifies, and takes the space a written one
// takes (its zeros are allocated, not holes).
func TestCreateMostlyZeros(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Skip(err)
	}
	defer s.Close()
	const size = 4 << 20
	data := make([]byte, size)
	copy(data[1<<20:], "not zero")
	oid := proto.VidToDataOid(7, 1)
	if err := s.Create(ctx, oid, size, 0, data, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := s.ReadAt(ctx, oid, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}
	var st unix.Stat_t
	if err := unix.Stat(s.objPath(oid), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < size {
		t.Errorf("the object takes %d bytes on disk, want its size %d (zeros allocated)", st.Blocks*512, size)
	}
}

// readSparse reads what a plain read does, over holes, space allocated
// but never written, data written and not yet flushed, and the file's
// end, with whatever the buffer held before cleared.
func TestReadSparseMatchesPlainRead(t *testing.T) {
	const size = 8 << 20
	f, err := os.Create(filepath.Join(t.TempDir(), "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 1<<20, 2<<20); err != nil {
		t.Logf("fallocate: %v (holes only)", err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, w := range []struct{ off, n int64 }{{3<<20 + 100, 70000}, {6 << 20, 4096}, {1<<20 + 1<<19, 10}, {size - 5000, 5000}, {0, 1}} {
		b := make([]byte, w.n)
		for i := range b {
			b[i] = byte(rnd.IntN(255) + 1)
		}
		if _, err := f.WriteAt(b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	check := func(off, n int64) {
		want := make([]byte, n)
		if _, err := f.ReadAt(want, off); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		got := bytes.Repeat([]byte{0xaa}, int(n))
		if err := readSparse(f, fd, got, off); err != nil {
			t.Fatalf("readSparse(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Fatalf("readSparse(%d, %d) differs at byte %d: %#x, want %#x", off, n, off+int64(i), got[i], want[i])
		}
	}
	check(0, size)
	check(4<<20, 4<<20)
	check(1<<20, 2<<20)
	// Random ranges of up to 1 MiB: every one crosses or ends in some of
	// the layout's edges above (the race detector makes every byte
	// copied cost, so the test keeps its ranges short).
	for range 60 {
		n := rnd.Int64N(1<<20) + 1
		check(rnd.Int64N(size-n+1), n)
	}
}

// TryReadAt serves what is open and in the page cache, verified like
// ReadAt, and declines (false) an object not open yet, bytes the kernel
// would have to read from the disk, or a range outside the object.
func TestTryReadAt(t *testing.T) {
	s := openStore(t, Config{})
	oid := proto.VidToDataOid(7, 1)
	data := bytes.Repeat([]byte("sheepdog"), 4096) // 32 KiB: two chunks
	if err := s.Create(ctx, oid, 4<<20, 0, data, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if !s.TryReadAt(oid, buf, 5000) || !bytes.Equal(buf, data[5000:5000+4096]) {
		t.Fatal("a cached 4 KiB read of an open object was not served, or served wrong bytes")
	}
	if s.TryReadAt(oid, buf, 4<<20-100) {
		t.Fatal("a read past the object's end was served")
	}
	if s.TryReadAt(proto.VidToDataOid(7, 2), buf, 0) {
		t.Fatal("a missing object was served")
	}
	// Out of the page cache: the data is synced, so DONTNEED drops it.
	h := s.files.tryAcquire(oid)
	if h == nil {
		t.Fatal("the created object is not open")
	}
	err := unix.Fadvise(h.fd, 0, 0, unix.FADV_DONTNEED)
	s.files.release(h)
	if err != nil {
		t.Fatal(err)
	}
	if s.TryReadAt(oid, buf, 20000) {
		t.Skip("the filesystem serves RWF_NOWAIT reads of evicted pages (tmpfs?)")
	}
	if err := s.ReadAt(ctx, oid, buf, 20000); err != nil || !bytes.Equal(buf, data[20000:20000+4096]) {
		t.Fatalf("ReadAt after a declined TryReadAt: %v", err)
	}
	clear(buf)
	if !s.TryReadAt(oid, buf, 20000) || !bytes.Equal(buf, data[20000:20000+4096]) {
		t.Fatal("the bytes ReadAt brought into the page cache were not served")
	}
}
