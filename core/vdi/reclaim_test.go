package vdi

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// dogDelete deletes a VDI or snapshot the way dog does (docs/protocol.md §4.6):
// zero its data_vdi_id with a write, which drops those references
// (WriteTable, as core/server sends it), then DEL_VDI.
func (e *env) dogDelete(name, tag string, snapid uint32) {
	e.t.Helper()
	vid := e.lookup(name, tag, snapid)
	table := e.inode(vid).DataVdiID
	if last := lastNonZero(table); last >= 0 {
		zeros := make([]byte, 4*(last+1))
		if err := e.svc.WriteTable(e.ctx, proto.VidToVdiOid(vid), proto.DataVdiIDOffset, zeros, 0); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.svc.Delete(e.ctx, name, tag, snapid); err != nil {
		e.t.Fatalf("delete %q tag %q snap %d: %v", name, tag, snapid, err)
	}
}

// cow writes idx of vid like a client: a copy-on-write when another VDI's
// object is there; the table write drops the reference it replaced.
func (e *env) cow(vid, idx uint32, fill byte) {
	e.t.Helper()
	e.write(vid, idx, fill)
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

// saveVM writes n bytes of VM state into vid's vmstate objects the way
// QEMU's savevm does (index = pos / object size), then records
// vm_state_size in the header, as snapshot create does before NEW_VDI.
func (e *env) saveVM(vid uint32, n int) {
	e.t.Helper()
	size := int(e.inode(vid).ObjectSize())
	for idx := 0; idx*size < n; idx++ {
		chunk := []byte(strings.Repeat("v", min(size, n-idx*size)))
		if err := e.obj.CreateAndWrite(e.ctx, proto.VidToVmstateOid(vid, uint32(idx)), 0, 0, chunk, 0); err != nil {
			e.t.Fatal(err)
		}
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	if err := e.obj.WriteObject(e.ctx, proto.VidToVdiOid(vid), 544, b[:], 0); err != nil {
		e.t.Fatal(err)
	}
}

// vmstateOids lists the vmstate objects held, sorted.
func (m *memObjects) vmstateOids() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for oid := range m.objs {
		if proto.IsVmstateObj(oid) {
			out = append(out, oid)
		}
	}
	slices.Sort(out)
	return out
}

// TestReclaimVMState: QEMU's savevm data goes with the vid it belongs to.
// "goto" (DEL_VDI of the working VDI, then a clone of the snapshot under
// the same name) and a rebase keep the snapshot's state, which loadvm then
// reads through parent_vdi_id; deleting the snapshot removes all of
// ceil(vm_state_size / object size) objects, a partial last one included,
// and leaves another snapshot's state and the shared data objects alone.
func TestReclaimVMState(t *testing.T) {
	e := newEnv(t, 0) // 1 MiB objects
	a := e.create("vm", 8<<20)
	e.write(a, 0, 'd')
	e.saveVM(a, 5<<19) // 2.5 MiB: objects 0, 1 and a partial 2
	_, s1 := e.snapshot("vm", "one")
	vm := proto.VidToVmstateOid
	want := func(step string, oids ...uint64) {
		t.Helper()
		slices.Sort(oids)
		if got := e.obj.vmstateOids(); !slices.Equal(got, oids) {
			t.Errorf("%s: vmstate objects %x, want %x", step, got, oids)
		}
	}
	want("after savevm", vm(s1, 0), vm(s1, 1), vm(s1, 2))

	// loadvm of "one": goto deletes the working VDI and clones s1.
	if _, err := e.svc.Delete(e.ctx, "vm", "", 0); err != nil {
		t.Fatal(err)
	}
	info, err := e.svc.New(e.ctx, NewParams{Name: "vm", BaseVid: s1})
	if err != nil {
		t.Fatal(err)
	}
	w2 := info.Vid
	if e.inode(w2).ParentVdiID != s1 {
		t.Fatalf("goto: parent %x, want %x", e.inode(w2).ParentVdiID, s1)
	}
	want("after goto", vm(s1, 0), vm(s1, 1), vm(s1, 2))

	// A second savevm, of exactly one object, then a rebase back onto s1
	// (the goto QEMU sends when DEL_VDI fails): both states stay.
	e.saveVM(w2, 1<<20)
	_, s2 := e.snapshot("vm", "two")
	if _, err := e.svc.New(e.ctx, NewParams{Name: "vm", SnapID: 1, BaseVid: s1}); err != nil {
		t.Fatal(err)
	}
	want("after rebase", vm(s1, 0), vm(s1, 1), vm(s1, 2), vm(s2, 0))

	e.dogDelete("vm", "one", 0)
	want("after deleting snapshot one", vm(s2, 0))
	if !e.obj.has(proto.VidToDataOid(s1, 0)) {
		t.Error("deleting snapshot one removed a data object the working VDI still reads")
	}
	if _, err := e.svc.Delete(e.ctx, "vm", "two", 0); err != nil {
		t.Fatal(err)
	}
	want("after deleting snapshot two")
}
