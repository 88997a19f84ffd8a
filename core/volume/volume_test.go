package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

const (
	shift   = 20 // 1 MiB objects keep the fake small
	objSize = 1 << shift
	vid     = 0x7c2b25
	snapVid = 0x7c2b24
)

var ctx = context.Background()

// inode describes an inode object to create.
type inode struct {
	vid      uint32
	name     string
	size     int64
	snapshot bool
	table    map[uint32]uint32 // data_vdi_id entries
}

func putInode(t *testing.T, m *memObjects, in inode) {
	t.Helper()
	ino := proto.Inode{Name: in.name, VdiSize: uint64(in.size), BlockSizeShift: shift, SnapID: 1, VdiID: in.vid, NrCopies: 1}
	if in.snapshot {
		ino.SnapCtime = 1 << 32
	}
	n := int64(proto.InodeHeaderSize)
	if len(in.table) > 0 {
		ino.DataVdiID = make([]uint32, proto.MaxDataIndexes)
		for idx, owner := range in.table {
			ino.DataVdiID[idx] = owner
			n = max(n, int64(proto.DataVdiIDOff(idx))+4)
		}
	}
	buf := make([]byte, n)
	if err := ino.MarshalRange(0, buf); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateAndWrite(ctx, proto.VidToVdiOid(in.vid), 0, 0, buf, 0); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, m *memObjects, v uint32, readOnly bool) *Volume {
	t.Helper()
	vol, err := Open(ctx, m, v, readOnly)
	if err != nil {
		t.Fatalf("open %x: %v", v, err)
	}
	return vol
}

// newVolume is a fresh, empty VDI of size bytes.
func newVolume(t *testing.T, size int64) (*memObjects, *Volume) {
	t.Helper()
	m := newMemObjects(shift)
	putInode(t, m, inode{vid: vid, name: "test", size: size})
	return m, open(t, m, vid, false)
}

// pattern is n bytes that differ per seed and per position.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

// inodeEntry reads data_vdi_id[idx] from the inode object's bytes.
func inodeEntry(t *testing.T, m *memObjects, v, idx uint32) uint32 {
	t.Helper()
	o := m.object(proto.VidToVdiOid(v))
	if o == nil {
		t.Fatalf("inode %x missing", v)
	}
	off := proto.DataVdiIDOff(idx)
	return binary.LittleEndian.Uint32(o[off : off+4])
}

func mustWrite(t *testing.T, vol *Volume, p []byte, off int64) {
	t.Helper()
	if n, err := vol.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("write [%d,+%d): %d %v", off, len(p), n, err)
	}
}

func mustRead(t *testing.T, vol *Volume, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if got, err := vol.ReadAt(b, off); err != nil || got != n {
		t.Fatalf("read [%d,+%d): %d %v", off, n, got, err)
	}
	return b
}

func TestOpen(t *testing.T) {
	m := newMemObjects(shift)
	putInode(t, m, inode{vid: vid, name: "test", size: 5 * objSize, table: map[uint32]uint32{3: vid}})
	putInode(t, m, inode{vid: 0x42, name: "", size: 0})
	vol := open(t, m, vid, false)
	if vol.Vid() != vid || vol.Name() != "test" || vol.Size() != 5*objSize || vol.ObjectSize() != objSize || vol.ReadOnly() {
		t.Errorf("volume: vid %x name %q size %d object size %d read-only %v", vol.Vid(), vol.Name(), vol.Size(), vol.ObjectSize(), vol.ReadOnly())
	}
	if !vol.Allocated(3) || vol.Owner(3) != vid || vol.Allocated(2) {
		t.Errorf("table: owner(3)=%x allocated(2)=%v", vol.Owner(3), vol.Allocated(2))
	}
	if h := vol.Inode(); h.DataVdiID != nil || h.Name != "test" {
		t.Errorf("Inode() = name %q with a table of %d", h.Name, len(h.DataVdiID))
	}
	_, err := Open(ctx, m, 0x43, false)
	if !errors.Is(err, proto.ResNoObj) {
		t.Errorf("open of a missing inode: %v, want %v", err, proto.ResNoObj)
	}
	_, err = Open(ctx, m, 0x42, false)
	if !errors.Is(err, proto.ResNoVdi) {
		t.Errorf("open of a deleted inode: %v, want %v", err, proto.ResNoVdi)
	}
}

func TestHolesReadZeros(t *testing.T) {
	m, vol := newVolume(t, 4*objSize)
	b := bytes.Repeat([]byte{0xff}, 4*objSize)
	if n, err := vol.ReadAt(b, 0); err != nil || n != len(b) {
		t.Fatalf("read: %d %v", n, err)
	}
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("a hole read as non-zero")
	}
	for idx := uint32(0); idx < 4; idx++ {
		if n := m.count(m.reads, proto.VidToDataOid(vid, idx)); n != 0 {
			t.Errorf("a hole at index %d was read from the object layer %d times", idx, n)
		}
	}
}

// TestWriteAllocates: a write into a hole creates the object and records
// it in data_vdi_id, in the inode object as well as in memory.
func TestWriteAllocates(t *testing.T) {
	for _, tc := range []struct {
		name     string
		off      int64
		n        int
		touched  []uint32
		untouchd []uint32
	}{
		{"inside one object", objSize + 4096, 512, []uint32{1}, []uint32{0, 2}},
		{"a whole object", 2 * objSize, objSize, []uint32{2}, []uint32{1, 3}},
		{"spanning three objects", objSize - 100, objSize + 200, []uint32{0, 1, 2}, []uint32{3}},
		{"the last byte", 4*objSize - 1, 1, []uint32{3}, []uint32{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, vol := newVolume(t, 4*objSize)
			vol.Flags = proto.FlagCmdDirect
			m.flags = nil // the inode's creation
			data := pattern(7, tc.n)
			mustWrite(t, vol, data, tc.off)

			for _, idx := range tc.touched {
				if vol.Owner(idx) != vid || inodeEntry(t, m, vid, idx) != vid {
					t.Errorf("index %d: owner %x, inode says %x, want %x", idx, vol.Owner(idx), inodeEntry(t, m, vid, idx), vid)
				}
				// The object holds the data at the right place and zeros
				// elsewhere.
				want := make([]byte, objSize)
				start := int64(idx) * objSize
				for i := range want {
					if p := start + int64(i) - tc.off; p >= 0 && p < int64(tc.n) {
						want[i] = data[p]
					}
				}
				if got := m.object(proto.VidToDataOid(vid, idx)); !bytes.Equal(got, want) {
					t.Errorf("object %d content differs", idx)
				}
			}
			for _, idx := range tc.untouchd {
				if vol.Owner(idx) != 0 || inodeEntry(t, m, vid, idx) != 0 || m.object(proto.VidToDataOid(vid, idx)) != nil {
					t.Errorf("index %d allocated by a write that did not touch it", idx)
				}
			}
			if got := mustRead(t, vol, tc.off, tc.n); !bytes.Equal(got, data) {
				t.Error("read back differs")
			}
			// A fresh open sees the same table.
			again := open(t, m, vid, false)
			for _, idx := range tc.touched {
				if again.Owner(idx) != vid {
					t.Errorf("after reopen index %d owner %x", idx, again.Owner(idx))
				}
			}
			// A second write to allocated objects writes in place.
			mustWrite(t, vol, pattern(9, tc.n), tc.off)
			for _, idx := range tc.touched {
				if n := m.count(m.creates, proto.VidToDataOid(vid, idx)); n != 1 {
					t.Errorf("index %d created %d times, want once", idx, n)
				}
			}
			for _, f := range m.flags {
				if f != proto.FlagCmdDirect {
					t.Errorf("an object write carried flags %#x, want the volume's %#x", f, proto.FlagCmdDirect)
				}
			}
		})
	}
}

// TestCopyOnWrite: after a snapshot the working VDI shares the snapshot's
// objects; its first write to one copies it and leaves the snapshot's
// object alone (docs/protocol.md §4.5).
func TestCopyOnWrite(t *testing.T) {
	m := newMemObjects(shift)
	putInode(t, m, inode{vid: snapVid, name: "test", size: 4 * objSize, snapshot: true, table: map[uint32]uint32{0: snapVid, 1: snapVid}})
	putInode(t, m, inode{vid: vid, name: "test", size: 4 * objSize, table: map[uint32]uint32{0: snapVid, 1: snapVid}})
	old0, old1 := pattern(1, objSize), pattern(2, objSize)
	for idx, b := range [][]byte{old0, old1} {
		if err := m.CreateAndWrite(ctx, proto.VidToDataOid(snapVid, uint32(idx)), 0, 0, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	m.readonly[snapVid] = true

	vol := open(t, m, vid, false)
	if got := mustRead(t, vol, 0, 2*objSize); !bytes.Equal(got[:objSize], old0) || !bytes.Equal(got[objSize:], old1) {
		t.Fatal("the working VDI does not read the snapshot's data")
	}

	w := pattern(50, 100)
	mustWrite(t, vol, w, 100)

	want := bytes.Clone(old0)
	copy(want[100:], w)
	if got := m.object(proto.VidToDataOid(vid, 0)); !bytes.Equal(got, want) {
		t.Error("the copied object is not the snapshot's content with the write on top")
	}
	if got := m.object(proto.VidToDataOid(snapVid, 0)); !bytes.Equal(got, old0) {
		t.Error("the snapshot's object changed")
	}
	if vol.Owner(0) != vid || inodeEntry(t, m, vid, 0) != vid {
		t.Errorf("index 0 owner %x (inode %x), want %x", vol.Owner(0), inodeEntry(t, m, vid, 0), vid)
	}
	if vol.Owner(1) != snapVid || inodeEntry(t, m, vid, 1) != snapVid || inodeEntry(t, m, snapVid, 0) != snapVid {
		t.Error("the copy changed entries it should not have")
	}
	if got := mustRead(t, vol, 0, objSize); !bytes.Equal(got, want) {
		t.Error("read after copy-on-write differs")
	}

	snap := open(t, m, snapVid, false)
	if !snap.ReadOnly() {
		t.Error("a snapshot opened writable")
	}
	if _, err := snap.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) || !errors.Is(err, proto.ResReadonly) {
		t.Errorf("write to a snapshot: %v, want %v", err, ErrReadOnly)
	}
	if got := mustRead(t, snap, 0, objSize); !bytes.Equal(got, old0) {
		t.Error("the snapshot reads changed data")
	}
}

func TestReadOnlyRefusesChanges(t *testing.T) {
	m, vol := newVolume(t, 2*objSize)
	mustWrite(t, vol, pattern(3, 10), 0)
	ro := open(t, m, vid, true)
	if !ro.ReadOnly() {
		t.Fatal("ReadOnly() = false for a volume opened read-only")
	}
	for name, f := range map[string]func() error{
		"write":        func() error { _, err := ro.WriteAt([]byte{1}, 0); return err },
		"discard":      func() error { return ro.Discard(ctx, 0, objSize) },
		"write zeroes": func() error { return ro.WriteZeroes(ctx, 0, objSize, true) },
	} {
		if err := f(); !errors.Is(err, proto.ResReadonly) {
			t.Errorf("%s on a read-only volume: %v", name, err)
		}
	}
	if got := mustRead(t, ro, 0, 10); !bytes.Equal(got, pattern(3, 10)) {
		t.Error("read-only volume reads wrong data")
	}
	if got := m.object(proto.VidToDataOid(vid, 0)); !bytes.Equal(got[:10], pattern(3, 10)) || got[10] != 0 {
		t.Error("a refused change reached the object")
	}
}

// TestDiscardAndZeroes: whole objects are dropped (or, with noHole,
// rewritten), partial ranges are zeroed in place.
func TestDiscardAndZeroes(t *testing.T) {
	type want struct {
		idx     uint32
		owner   uint32 // in the table after the call
		exists  bool   // this VDI's own object exists
		removed bool   // this VDI's own object was removed
	}
	for _, tc := range []struct {
		name   string
		call   func(v *Volume) error
		zeroed [2]int64 // range that must read as zeros
		wants  []want
	}{
		{"discard a whole owned object", func(v *Volume) error { return v.Discard(ctx, objSize, objSize) },
			[2]int64{objSize, 2 * objSize},
			[]want{{0, vid, true, false}, {1, 0, false, true}, {2, snapVid, false, false}}},
		{"discard a whole shared object", func(v *Volume) error { return v.Discard(ctx, 2*objSize, objSize) },
			[2]int64{2 * objSize, 3 * objSize},
			[]want{{1, vid, true, false}, {2, 0, false, false}}},
		{"discard part of an object", func(v *Volume) error { return v.Discard(ctx, objSize+10, 100) },
			[2]int64{objSize + 10, objSize + 110},
			[]want{{1, vid, true, false}}},
		{"discard across objects", func(v *Volume) error { return v.Discard(ctx, objSize/2, objSize*3/2) },
			[2]int64{objSize / 2, 2 * objSize},
			[]want{{0, vid, true, false}, {1, 0, false, true}}},
		{"discard in a hole", func(v *Volume) error { return v.Discard(ctx, 3*objSize+5, 10) },
			[2]int64{3 * objSize, 4 * objSize},
			[]want{{3, 0, false, false}}},
		{"write zeroes, no hole", func(v *Volume) error { return v.WriteZeroes(ctx, objSize, objSize, true) },
			[2]int64{objSize, 2 * objSize},
			[]want{{1, vid, true, false}}},
		{"write zeroes, no hole, over a shared object", func(v *Volume) error { return v.WriteZeroes(ctx, 2*objSize, objSize, true) },
			[2]int64{2 * objSize, 3 * objSize},
			[]want{{2, vid, true, false}}},
		{"write zeroes, no hole, in a hole", func(v *Volume) error { return v.WriteZeroes(ctx, 3*objSize, objSize, true) },
			[2]int64{3 * objSize, 4 * objSize},
			[]want{{3, 0, false, false}}},
		{"write zeroes may punch", func(v *Volume) error { return v.WriteZeroes(ctx, objSize, objSize, false) },
			[2]int64{objSize, 2 * objSize},
			[]want{{1, 0, false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Index 0 and 1 owned, index 2 shared with a snapshot, 3 a hole.
			m := newMemObjects(shift)
			putInode(t, m, inode{vid: snapVid, name: "test", size: 4 * objSize, snapshot: true, table: map[uint32]uint32{2: snapVid}})
			putInode(t, m, inode{vid: vid, name: "test", size: 4 * objSize, table: map[uint32]uint32{2: snapVid}})
			if err := m.CreateAndWrite(ctx, proto.VidToDataOid(snapVid, 2), 0, 0, pattern(4, objSize), 0); err != nil {
				t.Fatal(err)
			}
			m.readonly[snapVid] = true
			vol := open(t, m, vid, false)
			mustWrite(t, vol, pattern(5, 2*objSize), 0)
			before := mustRead(t, vol, 0, 4*objSize)

			if err := tc.call(vol); err != nil {
				t.Fatal(err)
			}
			after := mustRead(t, vol, 0, 4*objSize)
			z0, z1 := tc.zeroed[0], tc.zeroed[1]
			if !bytes.Equal(after[z0:z1], make([]byte, z1-z0)) {
				t.Errorf("[%d,%d) does not read as zeros", z0, z1)
			}
			if !bytes.Equal(after[:z0], before[:z0]) || !bytes.Equal(after[z1:], before[z1:]) {
				t.Errorf("bytes outside [%d,%d) changed", z0, z1)
			}
			for _, w := range tc.wants {
				if vol.Owner(w.idx) != w.owner || inodeEntry(t, m, vid, w.idx) != w.owner {
					t.Errorf("index %d: owner %x (inode %x), want %x", w.idx, vol.Owner(w.idx), inodeEntry(t, m, vid, w.idx), w.owner)
				}
				oid := proto.VidToDataOid(vid, w.idx)
				if exists := m.object(oid) != nil; exists != w.exists {
					t.Errorf("index %d: own object exists %v, want %v", w.idx, exists, w.exists)
				}
				if removed := m.count(m.removes, oid) > 0; removed != w.removed {
					t.Errorf("index %d: own object removed %v, want %v", w.idx, removed, w.removed)
				}
			}
			if got := m.object(proto.VidToDataOid(snapVid, 2)); !bytes.Equal(got, pattern(4, objSize)) {
				t.Error("the snapshot's object changed")
			}
		})
	}
}

func TestRangeChecks(t *testing.T) {
	const size = 3*objSize + 1000
	_, vol := newVolume(t, size)
	tail := pattern(8, 50)
	mustWrite(t, vol, tail, size-50)

	for _, tc := range []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantErr error
	}{
		{"whole volume", 0, size, size, nil},
		{"across the end", size - 50, 100, 50, io.EOF},
		{"at the end", size, 10, 0, io.EOF},
		{"past the end", size + objSize, 10, 0, io.EOF},
		{"empty at the end", size, 0, 0, nil},
		{"negative offset", -1, 10, 0, proto.ResInvalidParms},
	} {
		b := make([]byte, tc.n)
		n, err := vol.ReadAt(b, tc.off)
		if n != tc.wantN || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("read %s: %d %v, want %d %v", tc.name, n, err, tc.wantN, tc.wantErr)
		}
		if tc.name == "across the end" && !bytes.Equal(b[:50], tail) {
			t.Error("the bytes before the end are wrong")
		}
	}
	for _, tc := range []struct {
		name string
		off  int64
		n    int
		ok   bool
	}{
		{"ending at the end", size - 10, 10, true},
		{"across the end", size - 10, 11, false},
		{"past the end", size, 1, false},
		{"negative offset", -1, 1, false},
	} {
		_, err := vol.WriteAt(make([]byte, tc.n), tc.off)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, proto.ResInvalidParms)) {
			t.Errorf("write %s: %v", tc.name, err)
		}
	}
	for _, r := range [][2]int64{{size - 10, 11}, {-1, 1}, {0, -1}} {
		if err := vol.Discard(ctx, r[0], r[1]); !errors.Is(err, proto.ResInvalidParms) {
			t.Errorf("discard [%d,+%d): %v", r[0], r[1], err)
		}
	}
	// The io.ReaderAt contract end to end (the last 10 bytes were just
	// overwritten with zeros).
	all, err := io.ReadAll(io.NewSectionReader(vol, 0, size+100))
	if err != nil || len(all) != size || !bytes.Equal(all[size-50:size-10], tail[:40]) || !bytes.Equal(all[size-10:], make([]byte, 10)) {
		t.Errorf("ReadAll: %d bytes, %v", len(all), err)
	}
}

// TestConcurrentWritesToOneHole: many writers to disjoint ranges of the same
// unallocated object must all land. Without serialising the allocation
// each writer would create the object from zeros and the last create
// would erase the others' data.
func TestConcurrentWritesToOneHole(t *testing.T) {
	m, vol := newVolume(t, 512*objSize)
	m.createDelay = time.Millisecond
	const writers = 64
	const chunk = objSize / writers
	// Index 0 and index 256 share a lock stripe.
	for _, idx := range []int64{0, 256} {
		var wg sync.WaitGroup
		for i := 0; i < writers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := vol.WriteAt(pattern(byte(i), chunk), idx*objSize+int64(i)*chunk); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	for _, idx := range []int64{0, 256} {
		got := mustRead(t, vol, idx*objSize, objSize)
		for i := 0; i < writers; i++ {
			if !bytes.Equal(got[i*chunk:(i+1)*chunk], pattern(byte(i), chunk)) {
				t.Errorf("index %d: writer %d's data was lost", idx, i)
			}
		}
		if n := m.count(m.creates, proto.VidToDataOid(vid, uint32(idx))); n != 1 {
			t.Errorf("index %d created %d times, want once", idx, n)
		}
	}
}

// TestConcurrentMixedIO: readers and writers of different objects at once;
// every reader sees either zeros or the complete write, never a torn table.
func TestConcurrentMixedIO(t *testing.T) {
	_, vol := newVolume(t, 16*objSize)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := vol.WriteAt(pattern(byte(i), 4096), int64(i)*objSize); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			b := make([]byte, 4096)
			if _, err := vol.ReadAt(b, int64(i)*objSize); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(b, make([]byte, 4096)) && !bytes.Equal(b, pattern(byte(i), 4096)) {
				t.Errorf("index %d read neither zeros nor the write", i)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 16; i++ {
		if got := mustRead(t, vol, int64(i)*objSize, 4096); !bytes.Equal(got, pattern(byte(i), 4096)) {
			t.Errorf("index %d lost its write", i)
		}
	}
}

// TestFailedAllocation: the table entry changes only after the object
// exists and the inode was updated; a failure leaves the index a hole that
// the next write allocates again.
func TestFailedAllocation(t *testing.T) {
	for _, op := range []string{"create", "write-inode"} {
		t.Run(op, func(t *testing.T) {
			m, vol := newVolume(t, 2*objSize)
			m.fail(op, fmt.Errorf("injected: %w", proto.ResEIO))
			if _, err := vol.WriteAt(pattern(1, 10), 0); !errors.Is(err, proto.ResEIO) {
				t.Fatalf("write with a failing %s: %v", op, err)
			}
			if vol.Owner(0) != 0 || inodeEntry(t, m, vid, 0) != 0 {
				t.Errorf("after a failed %s: owner %x inode %x, want a hole", op, vol.Owner(0), inodeEntry(t, m, vid, 0))
			}
			mustWrite(t, vol, pattern(2, 10), 0)
			if vol.Owner(0) != vid || inodeEntry(t, m, vid, 0) != vid {
				t.Error("the retried write did not allocate")
			}
			if got := mustRead(t, vol, 0, 10); !bytes.Equal(got, pattern(2, 10)) {
				t.Error("the retried write reads back wrong")
			}
		})
	}
	t.Run("read", func(t *testing.T) {
		m, vol := newVolume(t, 2*objSize)
		mustWrite(t, vol, pattern(1, 10), 0)
		m.fail("read", fmt.Errorf("injected: %w", proto.ResEIO))
		if _, err := vol.ReadAt(make([]byte, 10), 0); !errors.Is(err, proto.ResEIO) {
			t.Errorf("read with a failing object read: %v", err)
		}
	})
}

// tryObjects is memObjects that can also read without waiting, and counts
// the reads it served that way.
type tryObjects struct {
	*memObjects
	served int
}

func (o *tryObjects) TryReadObject(oid uint64, off int64, buf []byte) bool {
	if o.ReadObject(ctx, oid, off, buf) != nil {
		return false
	}
	o.served++
	return true
}

// TryReadAt serves a read within one allocated object through the
// ObjectIO's TryReadObject, and a hole of a snapshot as zeros; it leaves
// to ReadAtContext a hole of a working VDI (checked against the inode
// first), a read across objects and one outside the VDI.
func TestTryReadAt(t *testing.T) {
	m := newMemObjects(shift)
	o := &tryObjects{memObjects: m}
	putInode(t, m, inode{vid: vid, name: "test", size: 3 * objSize})
	vol, err := Open(ctx, o, vid, false)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(5, 8192)
	mustWrite(t, vol, data, objSize+100)
	buf := make([]byte, 4096)
	if !vol.TryReadAt(buf, objSize+200) || !bytes.Equal(buf, data[100:100+4096]) || o.served != 1 {
		t.Fatalf("an allocated range: served %d, bytes equal %v", o.served, bytes.Equal(buf, data[100:100+4096]))
	}
	for name, off := range map[string]int64{"a hole": 2*objSize + 10, "across objects": objSize - 100, "past the end": 3*objSize - 100, "negative": -1} {
		if vol.TryReadAt(buf, off) {
			t.Errorf("%s was served", name)
		}
	}
	putInode(t, m, inode{vid: snapVid, name: "test", size: 3 * objSize, snapshot: true, table: map[uint32]uint32{1: vid}})
	snap, err := Open(ctx, o, snapVid, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0xff
	}
	if !snap.TryReadAt(buf, 2*objSize) || !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("a hole of a snapshot was not served as zeros")
	}
	if !snap.TryReadAt(buf, objSize+100) || !bytes.Equal(buf, data[:4096]) {
		t.Fatal("a snapshot's object was not served")
	}
}
