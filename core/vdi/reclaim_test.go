package vdi

import (
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// dogDelete deletes a VDI or snapshot the way dog does (PROTOCOL.md §4.6):
// zero its data_vdi_id with a write, let the server drop those references
// (core/server calls Reclaim after such a write), then DEL_VDI.
func (e *env) dogDelete(name, tag string, snapid uint32) {
	e.t.Helper()
	vid := e.lookup(name, tag, snapid)
	table := e.inode(vid).DataVdiID
	last := lastNonZero(table)
	var dropped []Ref
	if last >= 0 {
		zeros := make([]byte, 4*(last+1))
		if err := e.obj.WriteObject(e.ctx, proto.VidToVdiOid(vid), proto.DataVdiIDOffset, zeros, 0); err != nil {
			e.t.Fatal(err)
		}
		for i, v := range table[:last+1] {
			if v != 0 {
				dropped = append(dropped, Ref{Vid: v, Index: uint32(i)})
			}
		}
	}
	if err := e.svc.Reclaim(e.ctx, dropped); err != nil {
		e.t.Fatalf("reclaim after zeroing %x: %v", vid, err)
	}
	if _, err := e.svc.Delete(e.ctx, name, tag, snapid); err != nil {
		e.t.Fatalf("delete %q tag %q snap %d: %v", name, tag, snapid, err)
	}
}

// cow writes idx of vid like a client, then drops the reference the write
// replaced, as the server does after the table update.
func (e *env) cow(vid, idx uint32, fill byte) {
	e.t.Helper()
	old := e.inode(vid).DataVdiID[idx]
	e.write(vid, idx, fill)
	if old != 0 && old != vid {
		if err := e.svc.Reclaim(e.ctx, []Ref{{old, idx}}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestReclaimDogDeletes: a snapshot deleted the dog way (its table zeroed
// before DEL_VDI) gives back the objects only it used, keeps those the
// working VDI still shares; deleting the working VDI then frees the rest.
func TestReclaimDogDeletes(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	for i := uint32(0); i < 4; i++ {
		e.write(a, i, 'a')
	}
	w, s := e.snapshot("disk", "")
	e.cow(w, 0, 'w') // the snapshot's object stays: the snapshot names it
	e.cow(w, 1, 'w')
	oid := proto.VidToDataOid
	want := func(step string, oids ...uint64) {
		t.Helper()
		slices.Sort(oids)
		if got := e.obj.dataOids(); !slices.Equal(got, oids) {
			t.Errorf("%s: data objects %x, want %x", step, got, oids)
		}
	}
	want("after copy-on-write", oid(s, 0), oid(s, 1), oid(s, 2), oid(s, 3), oid(w, 0), oid(w, 1))

	e.dogDelete("disk", "", 1)
	want("after deleting the snapshot", oid(s, 2), oid(s, 3), oid(w, 0), oid(w, 1))
	e.dogDelete("disk", "", 0)
	want("after deleting the working VDI")
}

// TestReclaimClonesAndBase: space returns after deleting a clone, the base
// snapshot and the working VDI, in any order, with DEL_VDI alone (no table
// zeroing, as QEMU sends it).
func TestReclaimClonesAndBase(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("base", 8<<20)
	e.write(a, 0, 'a')
	e.write(a, 1, 'a')
	_, s := e.snapshot("base", "gold")
	info, err := e.svc.New(e.ctx, NewParams{Name: "clone", BaseVid: s})
	if err != nil {
		t.Fatal(err)
	}
	e.cow(info.Vid, 1, 'c')
	for _, step := range []struct{ name, tag string }{{"base", "gold"}, {"base", ""}} {
		if _, err := e.svc.Delete(e.ctx, step.name, step.tag, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The clone still reads (s,0) and its own (c,1); (s,1) is nobody's.
	want := []uint64{proto.VidToDataOid(s, 0), proto.VidToDataOid(info.Vid, 1)}
	slices.Sort(want)
	if got := e.obj.dataOids(); !slices.Equal(got, want) {
		t.Errorf("with the clone alive: data objects %x, want %x", got, want)
	}
	if _, err := e.svc.Delete(e.ctx, "clone", "", 0); err != nil {
		t.Fatal(err)
	}
	if got := e.obj.dataOids(); len(got) != 0 {
		t.Errorf("after deleting everything: %x", got)
	}
}

// TestRebase: a snapshot request whose base is an older snapshot makes the
// working VDI a snapshot and starts a new working VDI from the base.
func TestRebase(t *testing.T) {
	e := newEnv(t, 0)
	e.create("disk", 4<<20)
	w1, s1 := e.snapshot("disk", "one")
	e.write(w1, 0, 'x')
	info, err := e.svc.New(e.ctx, NewParams{Name: "disk", SnapID: 1, BaseVid: s1, Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w2 := info.Vid
	if got := e.lookup("disk", "", 0); got != w2 {
		t.Fatalf("working VDI %x, want %x", got, w2)
	}
	old, ino := e.inode(w1), e.inode(w2)
	if !e.vdiState(w1).Snapshot || old.SnapCtime == 0 {
		t.Error("the old working VDI did not become a snapshot")
	}
	if ino.ParentVdiID != s1 || ino.SnapID != old.SnapID+1 || ino.VdiSize != 8<<20 {
		t.Errorf("new working VDI: parent %x snap_id %d size %d", ino.ParentVdiID, ino.SnapID, ino.VdiSize)
	}
	if ino.DataVdiID[0] != 0 {
		t.Errorf("new working VDI shares %x at 0, want the base's hole", ino.DataVdiID[0])
	}
}
