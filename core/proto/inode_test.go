package proto

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// put writes f into b.
func put(b []byte, fields ...at) {
	for _, f := range fields {
		for i := 0; i < f.size; i++ {
			b[f.off+i] = byte(f.v >> (8 * i))
		}
	}
}

// sampleInode has every field set, distinct bytes in the tables and
// negative gref values.
func sampleInode() *Inode {
	ino := &Inode{
		Name: "Alice", Tag: "snap-1",
		CreateTime: 0x6b07d5903a178948, SnapCtime: 0x6b07d59a00001000, VMClockNsec: 123456789012,
		VdiSize: 64 << 20, VMStateSize: 1 << 30,
		CopyPolicy: 0x42, StorePolicy: 1, NrCopies: 3, BlockSizeShift: 22,
		SnapID: 2, VdiID: 0x15d168, ParentVdiID: 0x15d167, BtreeCounter: 0x01020304,
		DataVdiID: make([]uint32, MaxDataIndexes),
		Gref:      make([]Gref, MaxDataIndexes),
	}
	for i := range ino.DataVdiID {
		ino.DataVdiID[i] = uint32(i)*2654435761 ^ 0x5a5a5a5a
		ino.Gref[i] = Gref{Generation: int32(i*7 - 3000000), Count: int32(^i)}
	}
	return ino
}

// otherInode differs from sampleInode in every field.
func otherInode() *Inode {
	ino := &Inode{
		Name: "Bob-the-other-volume", Tag: "t",
		CreateTime: 1, SnapCtime: 2, VMClockNsec: 3, VdiSize: 4, VMStateSize: 5,
		CopyPolicy: 6, StorePolicy: 7, NrCopies: 8, BlockSizeShift: 9,
		SnapID: 10, VdiID: 11, ParentVdiID: 12, BtreeCounter: 13,
		DataVdiID: make([]uint32, MaxDataIndexes),
		Gref:      make([]Gref, MaxDataIndexes),
	}
	for i := range ino.DataVdiID {
		ino.DataVdiID[i] = ^uint32(i)
		ino.Gref[i] = Gref{Generation: int32(i), Count: -int32(i)}
	}
	return ino
}

// refImage encodes the full inode from docs/protocol.md §3.2, independently of
// the code under test.
func refImage(ino *Inode) []byte {
	b := make([]byte, InodeSize)
	copy(b[0:256], ino.Name)
	copy(b[256:512], ino.Tag)
	put(b, at{512, 8, ino.CreateTime}, at{520, 8, ino.SnapCtime}, at{528, 8, ino.VMClockNsec},
		at{536, 8, ino.VdiSize}, at{544, 8, ino.VMStateSize},
		at{552, 1, uint64(ino.CopyPolicy)}, at{553, 1, uint64(ino.StorePolicy)},
		at{554, 1, uint64(ino.NrCopies)}, at{555, 1, uint64(ino.BlockSizeShift)},
		at{556, 4, uint64(ino.SnapID)}, at{560, 4, uint64(ino.VdiID)},
		at{564, 4, uint64(ino.ParentVdiID)}, at{568, 4, uint64(ino.BtreeCounter)})
	for i, v := range ino.DataVdiID {
		put(b, at{4664 + 4*i, 4, uint64(v)})
	}
	for i, g := range ino.Gref {
		put(b, at{4198968 + 8*i, 4, uint64(uint32(g.Generation))}, at{4198968 + 8*i + 4, 4, uint64(uint32(g.Count))})
	}
	return b
}

func fullImage(t *testing.T, ino *Inode) []byte {
	t.Helper()
	b := make([]byte, InodeSize)
	if err := ino.MarshalRange(0, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInodeHeader(t *testing.T) {
	ino := sampleInode()
	want := refImage(ino)[:InodeHeaderSize]
	got := bytes.Repeat([]byte{0xee}, InodeHeaderSize) // MarshalHeader must overwrite everything
	ino.MarshalHeader(got)
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalHeader differs from the §3.2 layout at byte %d", firstDiff(got, want))
	}
	// Decoding needs only the 572 bytes sheep reads while probing.
	var d Inode
	if err := d.UnmarshalHeader(got[:572]); err != nil {
		t.Fatal(err)
	}
	hdr := *ino
	hdr.DataVdiID, hdr.Gref = nil, nil
	if !reflect.DeepEqual(d, hdr) {
		t.Errorf("UnmarshalHeader = %+v, want %+v", d, hdr)
	}
	if err := d.UnmarshalHeader(got[:571]); err == nil {
		t.Error("UnmarshalHeader of 571 bytes succeeded")
	}
	if !d.IsSnapshot() || d.ObjectSize() != 4<<20 {
		t.Errorf("IsSnapshot %v, ObjectSize %d", d.IsSnapshot(), d.ObjectSize())
	}
	if (&Inode{}).IsSnapshot() || (&Inode{}).ObjectSize() != 4<<20 || (&Inode{BlockSizeShift: 20}).ObjectSize() != 1<<20 {
		t.Error("IsSnapshot/ObjectSize of plain inodes")
	}
}

func TestInodeHeaderStrings(t *testing.T) {
	tests := []struct {
		name, want string
	}{
		{"", ""},
		{"a", "a"},
		{strings.Repeat("n", 255), strings.Repeat("n", 255)},
		// The field is 256 bytes; a name filling it has no NUL and is
		// still read back whole.
		{strings.Repeat("n", 256), strings.Repeat("n", 256)},
		{strings.Repeat("n", 300), strings.Repeat("n", 256)},
		// A NUL ends the C string.
		{"ab\x00cd", "ab"},
	}
	for _, tt := range tests {
		var b [InodeHeaderSize]byte
		(&Inode{Name: tt.name, Tag: tt.name}).MarshalHeader(b[:])
		var d Inode
		if err := d.UnmarshalHeader(b[:]); err != nil {
			t.Fatal(err)
		}
		if d.Name != tt.want || d.Tag != tt.want {
			t.Errorf("name %q: decoded name %q tag %q, want %q", tt.name, d.Name, d.Tag, tt.want)
		}
	}
}

// inodeRanges are byte ranges of the inode image that clients and sheep
// read and write. Every header part starts at a field boundary or in the
// unused area, as UnmarshalRange requires.
var inodeRanges = []struct {
	name string
	off  int64
	n    int64
}{
	{"whole object", 0, InodeSize},
	{"header", 0, InodeHeaderSize},
	{"first 572 bytes", 0, 572},
	{"QEMU/coherence prefix", 0, GrefOffset},
	{"tag at 256 (dog snapshot)", InodeTagOffset, MaxVdiTagLen},
	{"vdi_size (resize)", InodeVdiSizeOffset, 8},
	{"numeric header fields", 512, 60},
	{"one data_vdi_id entry", int64(DataVdiIDOff(77)), 4},
	{"first two entries", DataVdiIDOffset, 8},
	{"last data_vdi_id entry", GrefOffset - 4, 4},
	{"unaligned across header/data_vdi_id", InodeHeaderSize - 3, 10},
	{"unused area into data_vdi_id", 4000, 700},
	{"vdi_id into data_vdi_id", 560, InodeHeaderSize - 560 + 6},
	{"unaligned inside data_vdi_id", int64(DataVdiIDOff(3)) + 1, 10},
	{"unaligned across data_vdi_id/gref", GrefOffset - 3, 9},
	{"data_vdi_id and gref", DataVdiIDOffset, InodeSize - DataVdiIDOffset},
	{"one gref entry", GrefOffset + 8*12345, 8},
	{"gref count only", GrefOffset + 8*5 + 4, 4},
	{"unaligned inside gref", GrefOffset + 8*5 + 3, 7},
	{"last byte", InodeSize - 1, 1},
	{"tail", InodeSize - 13, 13},
	{"header through gref", 4600, GrefOffset - 4600 + 20},
}

func TestInodeMarshalRange(t *testing.T) {
	ino := sampleInode()
	ref := refImage(ino)
	for _, r := range inodeRanges {
		dst := bytes.Repeat([]byte{0xee}, int(r.n))
		if err := ino.MarshalRange(r.off, dst); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if want := ref[r.off : r.off+r.n]; !bytes.Equal(dst, want) {
			t.Errorf("%s: MarshalRange(%d, %d) differs at byte %d", r.name, r.off, r.n, firstDiff(dst, want))
		}
	}
	// Tables that were never decoded encode as zeros.
	hdr := *ino
	hdr.DataVdiID, hdr.Gref = nil, nil
	dst := bytes.Repeat([]byte{0xee}, 16)
	if err := hdr.MarshalRange(GrefOffset-8, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, make([]byte, 16)) {
		t.Errorf("nil tables encode as %x", dst)
	}
}

func TestInodeUnmarshalRange(t *testing.T) {
	src := refImage(sampleInode())
	for _, base := range []struct {
		name string
		make func() *Inode
	}{
		{"fresh", func() *Inode { return &Inode{} }},
		{"populated", otherInode},
	} {
		before := refImage(base.make())
		for _, r := range inodeRanges {
			ino := base.make()
			if err := ino.UnmarshalRange(r.off, src[r.off:r.off+r.n]); err != nil {
				t.Fatalf("%s/%s: %v", base.name, r.name, err)
			}
			want := append([]byte(nil), before...)
			copy(want[r.off:], src[r.off:r.off+r.n])
			if got := fullImage(t, ino); !bytes.Equal(got, want) {
				t.Errorf("%s/%s: image after UnmarshalRange(%d, %d) differs at byte %d", base.name, r.name, r.off, r.n, firstDiff(got, want))
			}
			if base.name == "fresh" {
				// Tables are allocated on first touch only.
				end := r.off + r.n
				touchesData := r.off < GrefOffset && end > DataVdiIDOffset
				touchesGref := end > GrefOffset
				if (ino.DataVdiID != nil) != touchesData || (ino.Gref != nil) != touchesGref {
					t.Errorf("%s/%s: data_vdi_id allocated %v (want %v), gref %v (want %v)", base.name, r.name,
						ino.DataVdiID != nil, touchesData, ino.Gref != nil, touchesGref)
				}
			}
		}
	}
}

func TestInodeRangeBounds(t *testing.T) {
	bad := []struct {
		off int64
		n   int
	}{
		{-1, 0},
		{-1, 1},
		{math.MinInt64, 1},
		{InodeSize + 1, 0},
		{InodeSize, 1},
		{InodeSize - 3, 4},
		{0, InodeSize + 1},
		// off+n overflows int64.
		{math.MaxInt64, 1},
		{math.MaxInt64 - 2, 5},
		{math.MaxInt64 - InodeSize + 1, InodeSize},
	}
	for _, tt := range bad {
		ino := &Inode{Name: "x", VdiID: 5}
		want := &Inode{Name: "x", VdiID: 5}
		buf := make([]byte, tt.n)
		if err := ino.MarshalRange(tt.off, buf); err == nil {
			t.Errorf("MarshalRange(%d, %d bytes) succeeded", tt.off, tt.n)
		}
		if err := ino.UnmarshalRange(tt.off, buf); err == nil {
			t.Errorf("UnmarshalRange(%d, %d bytes) succeeded", tt.off, tt.n)
		}
		if !reflect.DeepEqual(ino, want) {
			t.Errorf("UnmarshalRange(%d, %d bytes) failed but changed the inode", tt.off, tt.n)
		}
	}
	// Empty ranges anywhere inside are fine and touch nothing.
	for _, off := range []int64{0, 256, InodeHeaderSize, 5000, GrefOffset, GrefOffset + 5, InodeSize} {
		ino := &Inode{Name: "x"}
		if err := ino.MarshalRange(off, nil); err != nil {
			t.Errorf("MarshalRange(%d, empty): %v", off, err)
		}
		if err := ino.UnmarshalRange(off, nil); err != nil {
			t.Errorf("UnmarshalRange(%d, empty): %v", off, err)
		}
		if !reflect.DeepEqual(ino, &Inode{Name: "x"}) {
			t.Errorf("UnmarshalRange(%d, empty) changed the inode (name %q, data_vdi_id allocated %v, gref allocated %v)",
				off, ino.Name, ino.DataVdiID != nil, ino.Gref != nil)
		}
	}
}

// TestCaptureInodeWrites applies every inode update dog sent in
// dog-wire.log (tags, data_vdi_id entries, the zeroing before delete and
// rollback) and checks that re-encoding the range gives the sent bytes.
func TestCaptureInodeWrites(t *testing.T) {
	n := 0
	for _, m := range loadCapture(t) {
		var r Request
		if err := r.Unmarshal(m.Hdr); err != nil {
			t.Fatal(err)
		}
		o := r.Obj()
		if m.Dir != "REQ" || r.Opcode != OpWriteObj || !IsVdiObj(o.Oid) || m.Data == nil {
			continue
		}
		n++
		ino := otherInode()
		if err := ino.UnmarshalRange(int64(o.Offset), m.Data); err != nil {
			t.Fatalf("line %d: %v", m.Line, err)
		}
		got := make([]byte, len(m.Data))
		if err := ino.MarshalRange(int64(o.Offset), got); err != nil {
			t.Fatalf("line %d: %v", m.Line, err)
		}
		if !bytes.Equal(got, m.Data) {
			t.Errorf("line %d: range at %d re-encodes as %x, sent %x", m.Line, o.Offset, got, m.Data)
		}
	}
	if n < 5 {
		t.Fatalf("only %d inode writes in the capture", n)
	}
}

func TestCaptureInodeRanges(t *testing.T) {
	// dog vdi create -P Pre 8M, then dog vdi list reads data_vdi_id[0:2].
	ino := &Inode{Name: "Pre", VdiID: 0x5afa26}
	if err := ino.UnmarshalRange(DataVdiIDOffset, unhex("26fa5a0026fa5a00")); err != nil {
		t.Fatal(err)
	}
	if ino.DataVdiID[0] != 0x5afa26 || ino.DataVdiID[1] != 0x5afa26 || ino.DataVdiID[2] != 0 || ino.Gref != nil {
		t.Errorf("data_vdi_id[0:3] = %#x, gref allocated %v", ino.DataVdiID[:3], ino.Gref != nil)
	}
	// dog vdi snapshot -s s1 Alice writes the 256-byte tag at offset 256.
	ino = sampleInode()
	tag := make([]byte, MaxVdiTagLen)
	copy(tag, "s1")
	if err := ino.UnmarshalRange(InodeTagOffset, tag); err != nil {
		t.Fatal(err)
	}
	want := sampleInode()
	want.Tag = "s1"
	if !reflect.DeepEqual(ino, want) {
		t.Errorf("tag write changed more than the tag (tag now %q)", ino.Tag)
	}
	// dog vdi rollback zeroes data_vdi_id[0:32] before DEL_VDI.
	ino = sampleInode()
	if err := ino.UnmarshalRange(DataVdiIDOffset, make([]byte, 128)); err != nil {
		t.Fatal(err)
	}
	if ino.DataVdiID[31] != 0 || ino.DataVdiID[32] != sampleInode().DataVdiID[32] {
		t.Errorf("after zeroing 32 entries: [31] = %#x, [32] = %#x", ino.DataVdiID[31], ino.DataVdiID[32])
	}
}

func TestSheepTime(t *testing.T) {
	// The cluster ctime of dog-wire.log: 0x6b07d590 s, 974621 µs.
	ts := time.Unix(0x6b07d590, 974621789)
	if got := SheepTime(ts); got != 0x6b07d5903a178948 {
		t.Errorf("SheepTime = %#x, want 0x6b07d5903a178948", got)
	}
	if got := SheepTimeSeconds(0x6b07d5903a178948); got != 0x6b07d590 {
		t.Errorf("SheepTimeSeconds = %#x", got)
	}
	if got := SheepTime(time.Unix(0, 0)); got != 0 {
		t.Errorf("SheepTime(epoch) = %#x", got)
	}
	if got := SheepTime(time.Unix(1, 999999999)); got != 1<<32|999999000 {
		t.Errorf("SheepTime(1.999999999) = %#x", got)
	}
	// Independent of the location.
	if a, b := SheepTime(ts), SheepTime(ts.In(time.FixedZone("x", 5*3600))); a != b {
		t.Errorf("SheepTime depends on the zone: %#x vs %#x", a, b)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestInodeRangesElementWise runs the range tests again with the tables
// moved element by element, the path of a big-endian host, which this
// (little-endian) one takes nowhere else.
func TestInodeRangesElementWise(t *testing.T) {
	if !nativeLE {
		t.Skip("a big-endian host takes the element-wise path in every test")
	}
	nativeLE = false
	defer func() { nativeLE = true }()
	t.Run("MarshalRange", TestInodeMarshalRange)
	t.Run("UnmarshalRange", TestInodeUnmarshalRange)
}
