package store

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

var ctx = context.Background()

// openStore opens a store in a fresh temp dir; cfg.Dir, if set, is used
// instead.
func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantResult fails unless err wraps exactly the result code want.
func wantResult(t *testing.T, err error, want proto.Result) {
	t.Helper()
	var got proto.Result
	if !errors.As(err, &got) {
		t.Fatalf("error %v: want result %v (%#x), got no result", err, want, uint32(want))
	}
	if got != want {
		t.Fatalf("error %v: want result %v (%#x), got %v (%#x)", err, want, uint32(want), got, uint32(got))
	}
}

func mustCreate(t *testing.T, s *Store, oid uint64, size, off int64, data []byte) {
	t.Helper()
	if err := s.Create(ctx, oid, size, off, data, true); err != nil {
		t.Fatalf("Create %016x: %v", oid, err)
	}
}

func mustRead(t *testing.T, s *Store, oid uint64, off int64, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	if err := s.ReadAt(ctx, oid, buf, off); err != nil {
		t.Fatalf("ReadAt %016x [%d,+%d): %v", oid, off, n, err)
	}
	return buf
}

// allocated is the space the filesystem gave object oid.
func allocated(t *testing.T, s *Store, oid uint64) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(s.objPath(oid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestCreateIsSparseAndReadsZeros: an inode object (as a ledger) stays
// sparse, as in Sheepdog's store, even when created whole with mostly
// zeros (as recovery copies it); data objects are allocated whole
// (TestCreateAllocatesDataObjectsWhole).
func TestCreateIsSparseAndReadsZeros(t *testing.T) {
	s := openStore(t, Config{})
	const oid, size = 0x8000000100000007, 4 << 20
	mustCreate(t, s, oid, size, 1000, []byte("hello"))

	want := make([]byte, size)
	copy(want[1000:], "hello")
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, want) {
		t.Fatal("object does not read as zeros around the created data")
	}
	if n, err := s.Size(oid); err != nil || n != size {
		t.Fatalf("Size = %d, %v; want %d", n, err, size)
	}
	if a := allocated(t, s, oid); a >= size/2 {
		t.Fatalf("object of %d bytes with 5 bytes of data allocates %d bytes: not sparse", size, a)
	}
	const copied = 0x8000000100000009
	mustCreate(t, s, copied, size, 0, want) // the same, created whole
	if a := allocated(t, s, copied); a >= size/2 {
		t.Fatalf("inode of %d bytes created whole with 5 bytes of data allocates %d bytes: not sparse", size, a)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), "obj", "8000000100000007")); err != nil || fi.Size() != size {
		t.Fatalf("object file: %v, %v; want a file of %d bytes named by the oid", fi, err, size)
	}
}

func TestWriteReadRanges(t *testing.T) {
	const oid, size = 42, 64 << 10
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, oid, size, 0, nil)
	model := make([]byte, size)
	for i, w := range []struct {
		off int64
		n   int
	}{
		{0, 1},
		{0, 4096},
		{4095, 2},     // crosses a page boundary
		{size - 1, 1}, // last byte
		{size - 4096, 4096},
		{1000, 30000}, // overlaps earlier writes
		{0, size},     // whole object
		{size / 2, 0}, // empty write is fine
		{12345, 6789},
	} {
		data := bytes.Repeat([]byte{byte(i + 1)}, w.n)
		if err := s.WriteAt(ctx, oid, data, w.off, i%2 == 0); err != nil {
			t.Fatalf("write %d [%d,+%d): %v", i, w.off, w.n, err)
		}
		copy(model[w.off:], data)
		if got := mustRead(t, s, oid, w.off, w.n); !bytes.Equal(got, data) {
			t.Fatalf("write %d: read back differs", i)
		}
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, model) {
			t.Fatalf("after write %d: object differs from model", i)
		}
	}
}

func TestOutOfRangeIsInvalidParms(t *testing.T) {
	const oid, size = 7, 8192
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, oid, size, 0, nil)
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"read past end", func() error { return s.ReadAt(ctx, oid, make([]byte, 2), size-1) }},
		{"read at end", func() error { return s.ReadAt(ctx, oid, make([]byte, 1), size) }},
		{"read far past end", func() error { return s.ReadAt(ctx, oid, make([]byte, 1), 1<<40) }},
		{"read negative offset", func() error { return s.ReadAt(ctx, oid, make([]byte, 1), -1) }},
		{"read offset overflow", func() error { return s.ReadAt(ctx, oid, make([]byte, 2), math.MaxInt64) }},
		{"write past end", func() error { return s.WriteAt(ctx, oid, make([]byte, 2), size-1, false) }},
		{"write negative offset", func() error { return s.WriteAt(ctx, oid, []byte{1}, -4096, false) }},
		{"write offset overflow", func() error { return s.WriteAt(ctx, oid, make([]byte, 2), math.MaxInt64, false) }},
		{"punch past end", func() error { return s.Punch(ctx, oid, 4096, 4097, false) }},
		{"punch negative length", func() error { return s.Punch(ctx, oid, 4096, -1, false) }},
		{"create data past size", func() error { return s.Create(ctx, 8, 100, 90, make([]byte, 11), false) }},
		{"create negative offset", func() error { return s.Create(ctx, 8, 100, -1, []byte{1}, false) }},
		{"create negative size", func() error { return s.Create(ctx, 8, -1, 0, nil, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) { wantResult(t, tc.op(), proto.ResInvalidParms) })
	}
	// A failed write must not have grown the object.
	if n, err := s.Size(oid); err != nil || n != size {
		t.Fatalf("Size after bad writes = %d, %v; want %d", n, err, size)
	}
	if s.Exists(8) {
		t.Fatal("a rejected Create left an object behind")
	}
}

func TestMissingObjectIsNoObj(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	const oid = 0x8000000500000000
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"ReadAt", func() error { return s.ReadAt(ctx, oid, make([]byte, 1), 0) }},
		{"WriteAt", func() error { return s.WriteAt(ctx, oid, []byte{1}, 0, true) }},
		{"Punch", func() error { return s.Punch(ctx, oid, 0, 1, true) }},
		{"Remove", func() error { return s.Remove(ctx, oid) }},
		{"Sync", func() error { return s.Sync(ctx, oid) }},
		{"Size", func() error { _, err := s.Size(oid); return err }},
		{"SHA1", func() error { _, err := s.SHA1(oid); return err }},
		{"MoveToStale", func() error { return s.MoveToStale(oid, 1) }},
		{"ReadStale", func() error { _, err := s.ReadStale(oid, 1); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			wantResult(t, err, proto.ResNoObj)
			if !strings.Contains(err.Error(), "8000000500000000") {
				t.Errorf("error %q does not name the oid", err)
			}
		})
	}
	if s.Exists(oid) {
		t.Fatal("Exists reports a missing object")
	}
	// A WriteAt must not create the object as a side effect.
	if _, err := os.Stat(s.objPath(oid)); !os.IsNotExist(err) {
		t.Fatalf("object file after failed ops: %v", err)
	}
}

func TestSecondCreateReplaces(t *testing.T) {
	const oid = 99
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	mustCreate(t, s, oid, 8192, 0, bytes.Repeat([]byte{0xAA}, 8192))
	mustRead(t, s, oid, 0, 10) // the old inode is now in the file cache

	mustCreate(t, s, oid, 4096, 100, []byte("new"))
	if n, _ := s.Size(oid); n != 4096 {
		t.Fatalf("Size after replace = %d, want 4096", n)
	}
	want := make([]byte, 4096)
	copy(want[100:], "new")
	if got := mustRead(t, s, oid, 0, 4096); !bytes.Equal(got, want) {
		t.Fatal("read after replace does not see the new object")
	}
	// Writes after the replace land in the new file, not the old inode.
	if err := s.WriteAt(ctx, oid, []byte("after"), 0, true); err != nil {
		t.Fatal(err)
	}
	copy(want, "after")
	if onDisk, err := os.ReadFile(s.objPath(oid)); err != nil || !bytes.Equal(onDisk, want) {
		t.Fatalf("file on disk after replace+write differs (err %v)", err)
	}
}

func TestRemove(t *testing.T) {
	const oid = 5
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, oid, 4096, 0, []byte("x"))
	mustRead(t, s, oid, 0, 1) // cache the file
	if err := s.Remove(ctx, oid); err != nil {
		t.Fatal(err)
	}
	if s.Exists(oid) {
		t.Fatal("Exists after Remove")
	}
	wantResult(t, s.ReadAt(ctx, oid, make([]byte, 1), 0), proto.ResNoObj)
	wantResult(t, s.WriteAt(ctx, oid, []byte{1}, 0, false), proto.ResNoObj)
	wantResult(t, s.Remove(ctx, oid), proto.ResNoObj)
	if l, _ := s.List(); len(l) != 0 {
		t.Fatalf("List after Remove = %x", l)
	}
	// And the oid can be created afresh.
	mustCreate(t, s, oid, 4096, 1, []byte("y"))
	if got := mustRead(t, s, oid, 0, 2); !bytes.Equal(got, []byte{0, 'y'}) {
		t.Fatalf("re-created object reads %q", got)
	}
}

func TestListSortedSkipsTmpAndStale(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	oids := []uint64{0x8000000100000000, 3, 0x00ab00cd00000001, 1, 0x80ffffff00000000, 0x4000000200000000}
	for _, oid := range oids {
		mustCreate(t, s, oid, 512, 0, nil)
	}
	mustCreate(t, s, 77, 512, 0, nil)
	if err := s.MoveToStale(77, 3); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"0000000000000009.1.tmp", "0000000000000009.tmp", "0000000000000009_x", "8000000000000009_2", "zzzzzzzzzzzzzzzz", "sheep.log"} {
		if err := os.WriteFile(filepath.Join(s.objDir, junk), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An erasure-coded strip is listed by its key (proto.StripKey).
	if err := os.WriteFile(filepath.Join(s.objDir, "0000000000000009_2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(append(oids, proto.StripKey(9, 2))))
	if !slices.Equal(got, want) {
		t.Fatalf("List = %x, want %x", got, want)
	}
}

func TestStaleMoveListReadPurge(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	put := func(oid uint64, content string, epoch uint32) {
		t.Helper()
		mustCreate(t, s, oid, int64(len(content)), 0, []byte(content))
		mustRead(t, s, oid, 0, 1) // cached handles must not survive the move
		if err := s.MoveToStale(oid, epoch); err != nil {
			t.Fatal(err)
		}
		if s.Exists(oid) {
			t.Fatalf("%016x still exists after MoveToStale", oid)
		}
		wantResult(t, s.ReadAt(ctx, oid, make([]byte, 1), 0), proto.ResNoObj)
	}
	put(0x20, "b at 10", 10)
	put(0x10, "a at 5", 5)
	put(0x10, "a at 3", 3)
	put(0x30, "c at 4", 4)
	mustCreate(t, s, 0x10, 4, 0, []byte("live")) // a live copy beside stale ones

	if _, err := os.Stat(filepath.Join(s.Dir(), "obj", ".stale", "0000000000000010.5")); err != nil {
		t.Fatalf("stale file not at sheep's path: %v", err)
	}
	list, err := s.ListStale()
	if err != nil {
		t.Fatal(err)
	}
	want := []StaleObject{{0x10, 3}, {0x10, 5}, {0x20, 10}, {0x30, 4}}
	if !slices.Equal(list, want) {
		t.Fatalf("ListStale = %v, want %v", list, want)
	}
	for _, c := range []struct {
		oid     uint64
		epoch   uint32
		content string
	}{{0x10, 3, "a at 3"}, {0x10, 5, "a at 5"}, {0x20, 10, "b at 10"}} {
		got, err := s.ReadStale(c.oid, c.epoch)
		if err != nil || string(got) != c.content {
			t.Fatalf("ReadStale(%x, %d) = %q, %v; want %q", c.oid, c.epoch, got, err, c.content)
		}
	}
	if l, _ := s.List(); !slices.Equal(l, []uint64{0x10}) {
		t.Fatalf("List = %x, want only the live object", l)
	}

	if err := s.PurgeStale(5); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListStale(); !slices.Equal(list, []StaleObject{{0x20, 10}}) {
		t.Fatalf("after PurgeStale(5): %v, want only epoch 10", list)
	}
	wantResult(t, func() error { _, err := s.ReadStale(0x10, 5); return err }(), proto.ResNoObj)
	if got := mustRead(t, s, 0x10, 0, 4); string(got) != "live" {
		t.Fatalf("PurgeStale touched the live object: %q", got)
	}
}

func TestSHA1(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	content := make([]byte, 3<<20+17) // more than one read buffer
	for i := range content {
		content[i] = byte(i * 7)
	}
	clear(content[1<<20 : 2<<20]) // a hole
	mustCreate(t, s, 1, int64(len(content)), 0, content[:1<<20])
	if err := s.WriteAt(ctx, 1, content[2<<20:], 2<<20, false); err != nil {
		t.Fatal(err)
	}
	got, err := s.SHA1(1)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha1.Sum(content); got != want {
		t.Fatalf("SHA1 = %x, want %x", got, want)
	}
}

func TestPunchZeroes(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		name := map[bool]string{false: "hole", true: "write zeros"}[fallback]
		t.Run(name, func(t *testing.T) {
			const oid, size = 3, 1 << 20
			s := openStore(t, Config{})
			s.noPunchHole.Store(fallback)
			full := bytes.Repeat([]byte{0xff}, size)
			mustCreate(t, s, oid, size, 0, full)
			before := allocated(t, s, oid)
			want := slices.Clone(full)
			for _, r := range []struct{ off, n int64 }{
				{4096, 512 << 10}, // page aligned: frees blocks
				{100, 200},        // unaligned, inside a page
				{size - 10, 10},   // the tail
				{5000, 0},         // empty
			} {
				if err := s.Punch(ctx, oid, r.off, r.n, true); err != nil {
					t.Fatalf("Punch [%d,+%d): %v", r.off, r.n, err)
				}
				clear(want[r.off : r.off+r.n])
			}
			if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, want) {
				t.Fatal("punched ranges do not read as zeros, or other bytes changed")
			}
			if n, _ := s.Size(oid); n != size {
				t.Fatalf("Punch changed the size to %d", n)
			}
			after := allocated(t, s, oid)
			if !fallback && after > before-256<<10 {
				t.Fatalf("punching 512 KiB freed only %d bytes (%d -> %d)", before-after, before, after)
			}
		})
	}
}

func TestContextCanceled(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, 1, 10, 0, nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for name, err := range map[string]error{
		"Create":  s.Create(cctx, 2, 10, 0, nil, false),
		"ReadAt":  s.ReadAt(cctx, 1, make([]byte, 1), 0),
		"WriteAt": s.WriteAt(cctx, 1, []byte{1}, 0, false),
		"Punch":   s.Punch(cctx, 1, 0, 1, false),
		"Remove":  s.Remove(cctx, 1),
		"Sync":    s.Sync(cctx, 1),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", name, err)
		}
	}
	if !s.Exists(1) || s.Exists(2) {
		t.Fatal("a canceled call changed the store")
	}
}

func TestClose(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, 1, 10, 0, nil)
	mustRead(t, s, 1, 0, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wantResult(t, s.ReadAt(ctx, 1, make([]byte, 1), 0), proto.ResShutdown)
	wantResult(t, s.WriteAt(ctx, 1, []byte{1}, 0, false), proto.ResShutdown)
	wantResult(t, s.Create(ctx, 2, 10, 0, nil, false), proto.ResShutdown)
	if _, err := s.List(); err == nil {
		t.Fatal("List after Close succeeded")
	}
}

func TestOpenRemovesLeftoverTmp(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, NoSync: true})
	mustCreate(t, s, 1, 10, 0, []byte("keep"))
	s.Close()
	leftover := filepath.Join(dir, "obj", "0000000000000002.17.tmp")
	if err := os.WriteFile(leftover, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{Dir: dir, NoSync: true})
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover tmp file survived Open: %v", err)
	}
	if got := mustRead(t, s, 1, 0, 4); string(got) != "keep" {
		t.Fatalf("object after reopen reads %q", got)
	}
}

// TestCreateAllocatesDataObjectsWhole: a data object (and a strip) takes
// its whole size on disk from its creation, however little was written,
// as Sheepdog's store allocates it (dog's vdi create -P writes nothing
// else); it still reads as zeros around the data.
func TestCreateAllocatesDataObjectsWhole(t *testing.T) {
	s := openStore(t, Config{})
	const size = 4 << 20
	for _, oid := range []uint64{0x0000000100000007, proto.StripKey(0x0000000100000008, 2)} {
		mustCreate(t, s, oid, size, 1000, []byte("hello"))
		if a := allocated(t, s, oid); a < size {
			t.Errorf("%016x: %d bytes allocated, want the whole %d", oid, a, size)
		}
		want := make([]byte, size)
		copy(want[1000:], "hello")
		if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, want) {
			t.Errorf("%016x does not read as zeros around the created data", oid)
		}
	}
}

func TestCapacityAndUsed(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	size, free, err := s.Capacity()
	if err != nil || size == 0 || free > size {
		t.Fatalf("Capacity = %d, %d, %v", size, free, err)
	}
	used0, err := s.Used()
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, 1, 4<<20, 0, make([]byte, 1<<20))                 // data objects: allocated whole
	mustCreate(t, s, 2, 4<<20, 0, nil)                                 //
	mustCreate(t, s, 1<<63|3, 4<<20, 0, bytes.Repeat([]byte{1}, 4096)) // an inode: sparse
	used1, err := s.Used()
	if err != nil {
		t.Fatal(err)
	}
	if d := used1 - used0; d < 8<<20+4096 || d > 9<<20 {
		t.Fatalf("Used grew by %d after creating two 4 MiB data objects and an inode with 4 KiB", d)
	}
	if err := s.MoveToStale(2, 1); err != nil {
		t.Fatal(err)
	}
	used2, err := s.Used()
	if err != nil {
		t.Fatal(err)
	}
	if d := used1 - used2; d < 4<<20 || d > 4<<20+64<<10 {
		t.Fatalf("Used went from %d to %d when a 4 MiB object went stale, want 4 MiB less (stale copies are not counted)", used1, used2)
	}
}

func TestIOErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want proto.Result
	}{
		{unix.ENOSPC, proto.ResNoSpace},
		{unix.EDQUOT, proto.ResNoSpace},
		{&os.PathError{Op: "write", Path: "x", Err: unix.ENOSPC}, proto.ResNoSpace},
		{unix.EIO, proto.ResEIO},
		{unix.EROFS, proto.ResEIO},
		{errors.New("odd"), proto.ResEIO},
	} {
		err := ioError("write", 0xabc, tc.err)
		wantResult(t, err, tc.want)
		if !errors.Is(err, tc.err) {
			t.Errorf("%v: cause %v lost from the chain", err, tc.err)
		}
		if !strings.Contains(err.Error(), "0000000000000abc") {
			t.Errorf("%q does not name the oid", err)
		}
	}
}

// CreateOrWrite of part of an object that exists writes that part only;
// of a missing object, or of the whole object, it creates (replaces).
func TestCreateOrWrite(t *testing.T) {
	s := openStore(t, Config{})
	const oid, size = 0x00abcdef00000001, 64 << 10
	theirs := bytes.Repeat([]byte{0xab}, 4096)
	if err := s.CreateOrWrite(ctx, oid, size, 8192, theirs, true); err != nil {
		t.Fatal(err)
	}
	mine := bytes.Repeat([]byte{0xcd}, 4096)
	if err := s.CreateOrWrite(ctx, oid, size, 0, mine, true); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, mine)
	copy(want[8192:], theirs)
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, want) {
		t.Fatal("a partial create over an existing object lost the other bytes")
	}
	full := bytes.Repeat([]byte{0x11}, size)
	if err := s.CreateOrWrite(ctx, oid, size, 0, full, false); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, full) {
		t.Fatal("a whole-object create did not replace it")
	}
	if err := s.Verify(oid); err != nil {
		t.Fatalf("checksums after CreateOrWrite: %v", err)
	}
}

// NodeSpace is the space available when the store was first opened, kept
// across reopens.
func TestNodeSpace(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	_, free, err := s.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.NodeSpace()
	if err != nil || got == 0 || got > free+free/10 || got < free-free/10 {
		t.Fatalf("NodeSpace %d, %v; available %d", got, err, free)
	}
	if err := unix.Setxattr(dir, spaceAttr, binary.LittleEndian.AppendUint64(nil, 12345), 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got, err := openStore(t, Config{Dir: dir}).NodeSpace(); err != nil || got != 12345 {
		t.Fatalf("NodeSpace after reopen %d, %v; want the kept 12345", got, err)
	}
}
