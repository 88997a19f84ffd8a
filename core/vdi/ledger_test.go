package vdi

import (
	"context"
	"encoding/binary"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestDropFor(t *testing.T) {
	const self, other = 0x10, 0x20
	for _, c := range []struct {
		name     string
		snapshot bool
		owner    uint32
		g        proto.Gref
		want     dropAction
	}{
		{"own object, never copied", false, self, proto.Gref{}, dropRemove},
		{"own object of a snapshot with copies", true, self, proto.Gref{Count: 2}, dropLedger},
		{"own object of a snapshot, not counted", true, self, proto.Gref{}, dropScan},
		{"own object with a generation: gref not reset", false, self, proto.Gref{Generation: 1}, dropScan},
		{"a copied reference", false, other, proto.Gref{Generation: 1}, dropLedger},
		{"a copied reference, copied again", true, other, proto.Gref{Generation: 2, Count: 1}, dropLedger},
		{"another VDI's object, not counted", false, other, proto.Gref{}, dropScan},
		{"another VDI's object, gref unknown", false, other, proto.Gref{Generation: -1}, dropScan},
		{"own object, gref unknown", false, self, proto.Gref{Generation: -1}, dropScan},
	} {
		if got := dropFor(self, c.snapshot, c.owner, c.g); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// grefs reads gref[0, n) of vid.
func (e *env) grefs(vid uint32, n uint32) []proto.Gref {
	e.t.Helper()
	g, err := e.svc.readGrefs(e.ctx, vid, 0, n)
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// ledger returns the first n counters of the ledger of data object oid
// (nil if it has none).
func (e *env) ledger(oid uint64, n int) []int32 {
	e.obj.mu.Lock()
	defer e.obj.mu.Unlock()
	l, ok := e.obj.objs[proto.LedgerOid(oid)]
	if !ok {
		return nil
	}
	out := make([]int32, n)
	for i := range out {
		if 4*i+4 <= len(l) {
			out[i] = int32(binary.LittleEndian.Uint32(l[4*i:]))
		}
	}
	return out
}

// TestLedgerSnapshotCloneDelete is conformance test 104's sequence: write,
// snapshot, write, clone, write, delete the working VDI; then the
// snapshot. The shared object's ledger counts each copy-on-write away
// from it, and the object goes with its last reference, not before.
func TestLedgerSnapshotCloneDelete(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("test", 16<<20)
	e.write(a, 0, 'a')
	w, s := e.snapshot("test", "")
	if got, want := e.grefs(s, 1)[0], (proto.Gref{Count: 1}); got != want {
		t.Errorf("snapshot's gref %v, want %v", got, want)
	}
	if got, want := e.grefs(w, 1)[0], (proto.Gref{Generation: 1}); got != want {
		t.Errorf("working VDI's gref %v, want %v", got, want)
	}
	oid := proto.VidToDataOid
	shared := oid(s, 0)
	if e.ledger(shared, 2) != nil {
		t.Fatal("a ledger before any reference was dropped")
	}
	e.write(w, 0, 'w') // copy-on-write away from the snapshot
	if got, want := e.ledger(shared, 3), []int32{1, -1, 0}; !slices.Equal(got, want) {
		t.Errorf("ledger after the copy-on-write %v, want %v", got, want)
	}
	if got := e.grefs(w, 1)[0]; got != (proto.Gref{}) {
		t.Errorf("gref of the rewritten entry %v, want reset", got)
	}
	info, err := e.svc.New(e.ctx, NewParams{Name: "test2", BaseVid: s})
	if err != nil {
		t.Fatal(err)
	}
	c := info.Vid
	if got, want := e.grefs(s, 1)[0], (proto.Gref{Count: 2}); got != want {
		t.Errorf("snapshot's gref after the clone %v, want %v", got, want)
	}
	e.write(c, 0, 'c')
	if got, want := e.ledger(shared, 3), []int32{1, -2, 0}; !slices.Equal(got, want) {
		t.Errorf("ledger after the clone's copy-on-write %v, want %v", got, want)
	}
	n := e.obj.decrefs
	e.dogDelete("test", "", 0)
	if e.obj.decrefs != n {
		t.Error("the working VDI's own object went through a ledger")
	}
	want := []uint64{shared, oid(c, 0)}
	slices.Sort(want)
	if got := e.obj.dataOids(); !slices.Equal(got, want) {
		t.Errorf("after deleting the working VDI: %x, want %x", got, want)
	}
	if got := e.obj.ledgerOids(); !slices.Equal(got, []uint64{proto.LedgerOid(shared)}) {
		t.Errorf("ledgers %x, want the shared object's", got)
	}
	// The snapshot, the last reference: its drop (generation 0, copied
	// twice) zeroes the ledger; object and ledger go.
	e.dogDelete("test", "", 1)
	if got := e.obj.dataOids(); !slices.Equal(got, []uint64{oid(c, 0)}) {
		t.Errorf("after deleting the snapshot: %x, want the clone's own", got)
	}
	if got := e.obj.ledgerOids(); len(got) != 0 {
		t.Errorf("ledgers left: %x", got)
	}
}

// TestLedgerLastReferenceFrees: the snapshot goes first; the object stays
// while a copy still names it and goes with the last copy's drop.
func TestLedgerLastReferenceFrees(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	e.write(a, 0, 'a')
	_, s := e.snapshot("disk", "")
	if _, err := e.svc.New(e.ctx, NewParams{Name: "clone", BaseVid: s}); err != nil {
		t.Fatal(err)
	}
	oid := proto.VidToDataOid(s, 0)
	e.dogDelete("disk", "", 1) // the snapshot: generation 0, copied twice
	if !e.obj.has(oid) {
		t.Fatal("object freed while two copies name it")
	}
	if got, want := e.ledger(oid, 2), []int32{0, 2}; !slices.Equal(got, want) {
		t.Errorf("ledger %v, want %v", got, want)
	}
	e.dogDelete("disk", "", 0) // the working VDI's copy
	if !e.obj.has(oid) {
		t.Fatal("object freed while the clone names it")
	}
	// DEL_VDI alone (QEMU's delete, no zeroing first) drops the rest.
	if _, err := e.svc.Delete(e.ctx, "clone", "", 0); err != nil {
		t.Fatal(err)
	}
	if e.obj.has(oid) || e.obj.has(proto.LedgerOid(oid)) {
		t.Error("object or ledger left after the last reference went")
	}
}

// TestLedgerZeroCheckedByScan: a ledger that reaches zero while a live
// VDI still names the object (a drop counted twice) does not free it.
func TestLedgerZeroCheckedByScan(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	e.write(a, 0, 'a')
	w, s := e.snapshot("disk", "")
	oid := proto.VidToDataOid(s, 0)
	e.dogDelete("disk", "", 1)                             // ledger [0, 1]: the working VDI's copy is left
	if err := e.svc.Decref(e.ctx, oid, 1, 0); err != nil { // a duplicate drop
		t.Fatal(err)
	}
	if !e.obj.has(oid) {
		t.Fatalf("object freed by a zero ledger while %x names it", w)
	}
}

// countingObjects counts table reads of inodes other than one.
type countingObjects struct {
	Objects
	except uint64
	reads  atomic.Int32
}

func (c *countingObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	if proto.IsVdiObj(oid) && oid != c.except && off >= proto.DataVdiIDOffset {
		c.reads.Add(1)
	}
	return c.Objects.ReadObject(ctx, oid, off, buf)
}

// TestLedgerNoScan: dropping counted references reads no other VDI's
// table: the inode's own objects go outright, copied ones by their
// ledgers. Only a ledger's zero is checked against the live VDIs.
func TestLedgerNoScan(t *testing.T) {
	e := newEnv(t, 0)
	for _, name := range []string{"x1", "x2", "x3", "x4"} {
		e.create(name, 4<<20)
	}
	a := e.create("disk", 8<<20)
	e.write(a, 0, 'a')
	e.write(a, 1, 'a')
	w, _ := e.snapshot("disk", "")
	e.write(w, 2, 'w') // own
	c := &countingObjects{Objects: e.obj, except: proto.VidToVdiOid(w)}
	svc := New(c, e.cl, slog.New(slog.DiscardHandler))
	// Copy-on-write of entry 0, discard of entries 1 (copied) and 2 (own).
	e.obj.objs[proto.VidToDataOid(w, 0)] = []byte{'w'}
	if err := svc.WriteTable(e.ctx, proto.VidToVdiOid(w), int64(proto.DataVdiIDOff(0)), le32(w, 0, 0), 0); err != nil {
		t.Fatal(err)
	}
	if n := c.reads.Load(); n != 0 {
		t.Errorf("%d table reads of other VDIs, want none", n)
	}
	if e.obj.has(proto.VidToDataOid(w, 2)) {
		t.Error("own object not removed")
	}
	if e.obj.decrefs != 2 {
		t.Errorf("%d ledger drops, want 2", e.obj.decrefs)
	}
}

// TestLedgerRebaseCountsInBase: a rebase (snapshot request with an older
// base) counts its copy in the base's grefs, not in the working VDI's it
// turns into a snapshot.
func TestLedgerRebaseCountsInBase(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 4<<20)
	e.write(a, 0, 'a')
	w1, s1 := e.snapshot("disk", "one") // s1 {0,1}, w1 {1,0}
	info, err := e.svc.New(e.ctx, NewParams{Name: "disk", SnapID: 1, BaseVid: s1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.grefs(s1, 1)[0], (proto.Gref{Count: 2}); got != want {
		t.Errorf("base's gref %v, want %v", got, want)
	}
	if got, want := e.grefs(w1, 1)[0], (proto.Gref{Generation: 1}); got != want {
		t.Errorf("old working VDI's gref %v, want %v (nothing copied from it)", got, want)
	}
	if got, want := e.grefs(info.Vid, 1)[0], (proto.Gref{Generation: 1}); got != want {
		t.Errorf("new working VDI's gref %v, want %v", got, want)
	}
}

// TestLedgerUnchangedEntriesKeepGrefs: a table write covering entries it
// does not change (QEMU writes the min..max dirty range) resets only the
// grefs of the entries it changed.
func TestLedgerUnchangedEntriesKeepGrefs(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	e.write(a, 0, 'a')
	e.write(a, 1, 'a')
	w, s := e.snapshot("disk", "")
	e.obj.objs[proto.VidToDataOid(w, 1)] = []byte{'w'} // the copy-on-write of entry 1
	if err := e.svc.WriteTable(e.ctx, proto.VidToVdiOid(w), int64(proto.DataVdiIDOff(0)), le32(s, w), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := e.grefs(w, 2), []proto.Gref{{Generation: 1}, {}}; !slices.Equal(got, want) {
		t.Errorf("grefs %v, want %v", got, want)
	}
	if e.obj.decrefs != 1 {
		t.Errorf("%d drops, want 1", e.obj.decrefs)
	}
}

// TestLedgerZerosCheckedTogether: the objects one table write frees by
// their ledgers are checked against the live VDIs in one pass: one table
// read per live VDI, not one per object.
func TestLedgerZerosCheckedTogether(t *testing.T) {
	e := newEnv(t, 0)
	for _, name := range []string{"x1", "x2", "x3"} {
		e.create(name, 4<<20)
	}
	a := e.create("disk", 8<<20)
	for i := uint32(0); i < 4; i++ {
		e.write(a, i, 'a')
	}
	w, s := e.snapshot("disk", "")
	for i := uint32(0); i < 4; i++ {
		e.write(w, i, 'w') // every shared object copied away: ledgers [1, -1]
	}
	c := &countingObjects{Objects: e.obj, except: proto.VidToVdiOid(s)}
	svc := New(c, e.cl, slog.New(slog.DiscardHandler))
	// dog's delete of the snapshot: zero its table in one write.
	if err := svc.WriteTable(e.ctx, proto.VidToVdiOid(s), proto.DataVdiIDOffset, le32(0, 0, 0, 0), 0); err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < 4; i++ {
		if e.obj.has(proto.VidToDataOid(s, i)) {
			t.Errorf("object %d of the snapshot left", i)
		}
	}
	if n := c.reads.Load(); n != 4 { // x1, x2, x3, w
		t.Errorf("%d table reads of other VDIs, want 4", n)
	}
}
