package volume

import (
	"bytes"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Two volumes on one VDI stand for two front-ends (NBD and collie, say)
// that each cached the table before the other wrote: neither may lose or
// hide what the other acknowledged.
func TestOtherWriterAllocates(t *testing.T) {
	m, a := newVolume(t, 8*objSize)
	b := open(t, m, vid, false)

	// b allocates object 0 with data in its second half; a's table still
	// says hole.
	theirs := pattern(7, objSize/2)
	mustWrite(t, b, theirs, objSize/2)

	if got := mustRead(t, a, objSize/2, objSize/2); !bytes.Equal(got, theirs) {
		t.Fatal("a reads zeros where b wrote: a stale hole was trusted")
	}
	// a writes the first half: a WRITE to the existing object, not a
	// second CREATE that would zero b's half.
	mine := pattern(3, 4096)
	mustWrite(t, a, mine, 0)
	if n := m.count(m.creates, proto.VidToDataOid(vid, 0)); n != 1 {
		t.Fatalf("object 0 created %d times", n)
	}
	want := append(append(mine, make([]byte, objSize/2-4096)...), theirs...)
	for name, v := range map[string]*Volume{"a": a, "b": b} {
		if got := mustRead(t, v, 0, objSize); !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes", name)
		}
	}
}

func TestRefreshReportsOtherWritersObjects(t *testing.T) {
	m, a := newVolume(t, 8*objSize)
	b := open(t, m, vid, false)
	mustWrite(t, b, pattern(1, 10), 3*objSize)
	mustWrite(t, b, pattern(2, 10), 5*objSize+100)
	if a.Allocated(3) || a.Allocated(5) {
		t.Fatal("a knew b's objects without reading the inode")
	}
	if err := a.Refresh(ctx, 0, a.Size()); err != nil {
		t.Fatal(err)
	}
	for idx := uint32(0); idx < 8; idx++ {
		if want := idx == 3 || idx == 5; a.Allocated(idx) != want {
			t.Errorf("after Refresh, index %d allocated %v, want %v", idx, a.Allocated(idx), want)
		}
	}
}

// b discards an object a still names: a's reads give zeros (not NO_OBJ),
// a's writes allocate it again, and a's discard of a hole a never saw
// allocated still frees b's object.
func TestOtherWriterDiscards(t *testing.T) {
	m, a := newVolume(t, 4*objSize)
	b := open(t, m, vid, false)
	mustWrite(t, a, pattern(1, objSize), 0)
	mustRead(t, b, 0, 16) // b's table now names object 0 too
	if err := b.Discard(ctx, 0, objSize); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, a, 0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("a reads data of a discarded object")
	}
	mine := pattern(9, 4096)
	mustWrite(t, a, mine, 8192)
	if got := mustRead(t, b, 8192, 4096); !bytes.Equal(got, mine) {
		t.Fatal("a's write after b's discard is lost")
	}

	mustWrite(t, b, pattern(4, 100), 2*objSize)
	if err := a.Discard(ctx, 2*objSize, objSize); err != nil {
		t.Fatal(err)
	}
	if m.object(proto.VidToDataOid(vid, 2)) != nil || inodeEntry(t, m, vid, 2) != 0 {
		t.Fatal("a's discard missed the object b allocated")
	}
}

// A snapshot's table never changes: its holes are not read again.
func TestSnapshotHolesNotReread(t *testing.T) {
	m := newMemObjects(shift)
	putInode(t, m, inode{vid: snapVid, name: "s", size: 4 * objSize, snapshot: true})
	s := open(t, m, snapVid, true)
	before := m.count(m.reads, proto.VidToVdiOid(snapVid))
	mustRead(t, s, 0, 4*objSize)
	if err := s.Refresh(ctx, 0, s.Size()); err != nil {
		t.Fatal(err)
	}
	if n := m.count(m.reads, proto.VidToVdiOid(snapVid)) - before; n != 0 {
		t.Fatalf("%d inode reads for a snapshot's holes", n)
	}
}
