package cluster

import (
	"math/bits"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func testNode(addr string) proto.Node {
	return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort(addr)), NrVnodes: proto.DefaultVnodes}
}

var (
	nodeA = testNode("10.0.0.1:7000")
	nodeB = testNode("10.0.0.2:7000")
	nodeC = testNode("10.0.0.3:7000")
)

// formatEntry formats with the nodes deliberately out of Sheepdog's order.
func formatEntry() *Entry {
	return &Entry{Kind: KindFormat, Ctime: 0x5f00000000000001, Time: 1600000000, Copies: 3,
		CopyPolicy: 0, Flags: proto.ClusterFlagUseLock, BlockSizeShift: 22, Store: "plain",
		Nodes: []proto.Node{nodeC, nodeA, nodeB}}
}

func formatted(t *testing.T) *State {
	t.Helper()
	s := &State{}
	if res := s.Apply(formatEntry()); res != proto.ResSuccess {
		t.Fatalf("format: %v", res)
	}
	return s
}

func mustApply(t *testing.T, s *State, e *Entry) {
	t.Helper()
	if res := s.Apply(e); res != proto.ResSuccess {
		t.Fatalf("apply %+v: %v", e, res)
	}
}

func nodeIDs(nodes []proto.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.NodeID.String())
	}
	return out
}

func TestFormatResetsState(t *testing.T) {
	s := formatted(t)
	// Give the cluster a history that the next format must wipe.
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 0x7c2b25, Copies: 2})
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 0x7c2b25})
	mustApply(t, s, &Entry{Kind: KindEpoch, Time: 1600000100, Nodes: []proto.Node{nodeA}})
	mustApply(t, s, &Entry{Kind: KindRecovery, DisableRecovery: true})

	e := formatEntry()
	e.Ctime, e.Copies, e.Store, e.Time = 0x6000000000000002, 2, "tree", 1700000000
	mustApply(t, s, e)

	if !s.Formatted() || s.Status() != proto.StatusOK {
		t.Errorf("formatted=%v status=%d, want true/%d", s.Formatted(), s.Status(), proto.StatusOK)
	}
	if s.Ctime != e.Ctime || s.NrCopies != 2 || s.Store != "tree" || s.Flags != proto.ClusterFlagUseLock || s.BlockSizeShift != 22 {
		t.Errorf("cluster fields = ctime %x copies %d store %q flags %x shift %d", s.Ctime, s.NrCopies, s.Store, s.Flags, s.BlockSizeShift)
	}
	if s.DisableRecovery {
		t.Error("format kept DisableRecovery")
	}
	if s.Epoch() != 1 || len(s.Epochs) != 1 || s.Epochs[0].Time != 1700000000 {
		t.Errorf("epochs = %+v, want only epoch 1 at 1700000000", s.Epochs)
	}
	want := []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}
	if got := nodeIDs(s.Nodes()); !slices.Equal(got, want) {
		t.Errorf("nodes = %v, want sorted %v", got, want)
	}
	if len(s.Vdis) != 0 || s.InUse(0x7c2b25) || s.IsDeleted(0x7c2b25) {
		t.Errorf("vdis survived format: %v inuse=%v deleted=%v", s.Vdis, s.InUse(0x7c2b25), s.IsDeleted(0x7c2b25))
	}
	// The caller's slice is not reordered in place.
	if e.Nodes[0] != nodeC {
		t.Error("format sorted the entry's node slice in place")
	}
}

func TestFormatRejectsBadEntries(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(e *Entry)
	}{
		{"no ctime", func(e *Entry) { e.Ctime = 0 }},
		{"no nodes", func(e *Entry) { e.Nodes = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := formatted(t)
			mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 5})
			before := s.Clone()
			e := formatEntry()
			tc.edit(e)
			if res := s.Apply(e); res != proto.ResInvalidParms {
				t.Fatalf("result %v, want %v", res, proto.ResInvalidParms)
			}
			if !reflect.DeepEqual(s, before) {
				t.Error("a refused format changed the state")
			}
		})
	}
}

// TestBeforeFormat: an unformatted cluster refuses every entry but format
// and shutdown with WAIT_FOR_FORMAT and stays as it was.
func TestBeforeFormat(t *testing.T) {
	for _, tc := range []struct {
		e    *Entry
		want proto.Result
	}{
		{&Entry{Kind: KindAddVdi, Vid: 1}, proto.ResWaitForFormat},
		{&Entry{Kind: KindDelVdi, Vid: 1}, proto.ResWaitForFormat},
		{&Entry{Kind: KindLock, Vid: 1, Owner: nodeA.NodeID}, proto.ResWaitForFormat},
		{&Entry{Kind: KindRelease, Vid: 1}, proto.ResWaitForFormat},
		{&Entry{Kind: KindEpoch, Nodes: []proto.Node{nodeA}}, proto.ResWaitForFormat},
		{&Entry{Kind: KindRecovery, DisableRecovery: true}, proto.ResWaitForFormat},
		{&Entry{Kind: KindShutdown}, proto.ResSuccess},
		{&Entry{Kind: 0}, proto.ResInvalidParms},
		{&Entry{Kind: 99}, proto.ResInvalidParms},
	} {
		s := &State{}
		if res := s.Apply(tc.e); res != tc.want {
			t.Errorf("kind %d before format: %v, want %v", tc.e.Kind, res, tc.want)
		}
		if s.Formatted() || s.Epoch() != 0 || len(s.Vdis) != 0 || s.DisableRecovery || s.Status() != proto.StatusWait {
			t.Errorf("kind %d before format changed the state: %v", tc.e.Kind, s)
		}
	}
}

func TestAddVdi(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 0x7c2b25, Copies: 2, CopyPolicy: 0, BlockSizeShift: 20})
	want := proto.VdiState{Vid: 0x7c2b25, NrCopies: 2, BlockSizeShift: 20, LockState: proto.LockStateUnlocked}
	if got := s.VdiState(0x7c2b25); got == nil || *got != want {
		t.Fatalf("vdi state = %+v, want %+v", got, want)
	}
	if !s.InUse(0x7c2b25) || s.IsDeleted(0x7c2b25) {
		t.Errorf("inuse=%v deleted=%v, want true/false", s.InUse(0x7c2b25), s.IsDeleted(0x7c2b25))
	}
	if s.Copies(0x7c2b25) != 2 || s.Copies(0x123) != 3 {
		t.Errorf("copies = %d (vdi) %d (unknown), want 2 and the cluster's 3", s.Copies(0x7c2b25), s.Copies(0x123))
	}

	// Snapshot: the old working vid becomes a snapshot, the new one has it
	// as its parent.
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 0x7c2b26, OldVid: 0x7c2b25, SnapshotOld: true, ParentVid: 0x7c2b25})
	if !s.VdiState(0x7c2b25).Snapshot || s.VdiState(0x7c2b26).Snapshot || s.VdiState(0x7c2b26).ParentVid != 0x7c2b25 {
		t.Errorf("after snapshot: old %+v new %+v", s.VdiState(0x7c2b25), s.VdiState(0x7c2b26))
	}
	// A re-create after a delete names the old vid without snapshotting it.
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 0x7c2b27, OldVid: 0x7c2b26})
	if s.VdiState(0x7c2b26).Snapshot {
		t.Error("OldVid without SnapshotOld marked the old vid a snapshot")
	}

	for _, tc := range []struct {
		name string
		e    *Entry
		want proto.Result
	}{
		{"taken vid", &Entry{Kind: KindAddVdi, Vid: 0x7c2b25, OldVid: 0x7c2b27, SnapshotOld: true}, proto.ResVdiExist},
		{"vid 0", &Entry{Kind: KindAddVdi, Vid: 0}, proto.ResInvalidParms},
		{"vid past the space", &Entry{Kind: KindAddVdi, Vid: proto.NrVdis}, proto.ResInvalidParms},
	} {
		before := s.Clone()
		if res := s.Apply(tc.e); res != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, res, tc.want)
		}
		if !reflect.DeepEqual(s, before) {
			t.Errorf("%s: refused entry changed the state", tc.name)
		}
	}
	if s.VdiState(0x7c2b27).Snapshot {
		t.Error("a refused AddVdi still marked its OldVid a snapshot")
	}
	if got := s.SortedVids(); !slices.Equal(got, []uint32{0x7c2b25, 0x7c2b26, 0x7c2b27}) {
		t.Errorf("sorted vids = %x", got)
	}
}

func TestDelVdi(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 42})
	mustApply(t, s, &Entry{Kind: KindLock, Vid: 42, Owner: nodeA.NodeID})
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 42})
	v := s.VdiState(42)
	if !v.Deleted || !s.IsDeleted(42) {
		t.Errorf("deleted flag %v bit %v, want both set", v.Deleted, s.IsDeleted(42))
	}
	if !s.InUse(42) {
		t.Error("delete cleared the in-use bit; probe chains would break")
	}
	if v.LockState != proto.LockStateUnlocked || v.LockOwner != (proto.NodeID{}) {
		t.Errorf("delete kept the lock: %+v", v)
	}
	if res := s.Apply(&Entry{Kind: KindDelVdi, Vid: 43}); res != proto.ResNoVdi {
		t.Errorf("delete of an unknown vid: %v, want %v", res, proto.ResNoVdi)
	}
}

// TestLocks walks one VDI through Sheepdog's normal lock states.
func TestLocks(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 7})
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 8})
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 8})

	steps := []struct {
		name      string
		e         *Entry
		want      proto.Result
		wantState uint32
		wantOwner proto.NodeID
	}{
		{"release unlocked", &Entry{Kind: KindRelease, Vid: 7}, proto.ResVdiNotLocked, proto.LockStateUnlocked, proto.NodeID{}},
		{"A locks", &Entry{Kind: KindLock, Vid: 7, Owner: nodeA.NodeID, Token: 11}, proto.ResSuccess, proto.LockStateLocked, nodeA.NodeID},
		// The same entry applied twice (a retried proposal) succeeds; a
		// second lock, even through the same node (a second QEMU there),
		// is refused, as Sheepdog's vdi_lock refuses it.
		{"A's lock retried", &Entry{Kind: KindLock, Vid: 7, Owner: nodeA.NodeID, Token: 11}, proto.ResSuccess, proto.LockStateLocked, nodeA.NodeID},
		{"A locks again", &Entry{Kind: KindLock, Vid: 7, Owner: nodeA.NodeID, Token: 12}, proto.ResVdiLocked, proto.LockStateLocked, nodeA.NodeID},
		{"A locks without a token", &Entry{Kind: KindLock, Vid: 7, Owner: nodeA.NodeID}, proto.ResVdiLocked, proto.LockStateLocked, nodeA.NodeID},
		{"B is refused", &Entry{Kind: KindLock, Vid: 7, Owner: nodeB.NodeID, Token: 11}, proto.ResVdiLocked, proto.LockStateLocked, nodeA.NodeID},
		{"release", &Entry{Kind: KindRelease, Vid: 7}, proto.ResSuccess, proto.LockStateUnlocked, proto.NodeID{}},
		{"release twice", &Entry{Kind: KindRelease, Vid: 7}, proto.ResVdiNotLocked, proto.LockStateUnlocked, proto.NodeID{}},
		{"B locks", &Entry{Kind: KindLock, Vid: 7, Owner: nodeB.NodeID}, proto.ResSuccess, proto.LockStateLocked, nodeB.NodeID},
	}
	for _, st := range steps {
		if res := s.Apply(st.e); res != st.want {
			t.Fatalf("%s: %v, want %v", st.name, res, st.want)
		}
		v := s.VdiState(7)
		if v.LockState != st.wantState || v.LockOwner != st.wantOwner {
			t.Fatalf("%s: lock %d owner %s, want %d owner %s", st.name, v.LockState, v.LockOwner, st.wantState, st.wantOwner)
		}
	}
	for _, tc := range []struct {
		name string
		e    *Entry
		want proto.Result
	}{
		{"lock unknown", &Entry{Kind: KindLock, Vid: 9, Owner: nodeA.NodeID}, proto.ResNoVdi},
		{"lock deleted", &Entry{Kind: KindLock, Vid: 8, Owner: nodeA.NodeID}, proto.ResNoVdi},
		{"release unknown", &Entry{Kind: KindRelease, Vid: 9}, proto.ResNoVdi},
	} {
		if res := s.Apply(tc.e); res != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, res, tc.want)
		}
	}
}

func TestEpochDropsLocksOfLeavers(t *testing.T) {
	s := formatted(t)
	for vid, owner := range map[uint32]proto.NodeID{1: nodeA.NodeID, 2: nodeB.NodeID, 3: nodeC.NodeID} {
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: vid})
		mustApply(t, s, &Entry{Kind: KindLock, Vid: vid, Owner: owner})
	}
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 4}) // never locked

	// B leaves; the list comes unsorted.
	mustApply(t, s, &Entry{Kind: KindEpoch, Time: 1600000200, Nodes: []proto.Node{nodeC, nodeA}})
	if s.Epoch() != 2 || len(s.Epochs) != 2 || s.Epochs[1].Epoch != 2 || s.Epochs[1].Time != 1600000200 {
		t.Fatalf("epochs = %+v", s.Epochs)
	}
	if got := nodeIDs(s.Nodes()); !slices.Equal(got, []string{"10.0.0.1:7000", "10.0.0.3:7000"}) {
		t.Errorf("epoch 2 nodes = %v", got)
	}
	if got := nodeIDs(s.EpochNodes(1)); len(got) != 3 {
		t.Errorf("epoch 1 nodes = %v, want the three original nodes", got)
	}
	if s.EpochNodes(0) != nil || s.EpochNodes(3) != nil {
		t.Error("EpochNodes answers for epochs that do not exist")
	}
	for vid, want := range map[uint32]uint32{1: proto.LockStateLocked, 2: proto.LockStateUnlocked, 3: proto.LockStateLocked, 4: proto.LockStateUnlocked} {
		if got := s.VdiState(vid).LockState; got != want {
			t.Errorf("vid %d lock state %d, want %d", vid, got, want)
		}
	}
	if s.VdiState(2).LockOwner != (proto.NodeID{}) {
		t.Error("dropped lock kept its owner")
	}
	// Node order comes from the entry, not the previous epoch.
	mustApply(t, s, &Entry{Kind: KindEpoch, Nodes: []proto.Node{nodeB, nodeA, nodeC}})
	if s.Epoch() != 3 || len(s.Nodes()) != 3 {
		t.Errorf("epoch %d with %d nodes, want 3/3", s.Epoch(), len(s.Nodes()))
	}
}

func TestRecoveryAndShutdown(t *testing.T) {
	s := formatted(t)
	for _, disable := range []bool{true, true, false, true} {
		mustApply(t, s, &Entry{Kind: KindRecovery, DisableRecovery: disable})
		if s.DisableRecovery != disable {
			t.Fatalf("DisableRecovery = %v, want %v", s.DisableRecovery, disable)
		}
	}
	// Shutdown is a side effect of the live entry; the state machine keeps
	// nothing, so a replayed log never stops a node.
	before := s.Clone()
	mustApply(t, s, &Entry{Kind: KindShutdown})
	if !reflect.DeepEqual(s, before) || s.Status() != proto.StatusOK {
		t.Errorf("shutdown changed the state: status %d", s.Status())
	}
}

func TestFirstClear(t *testing.T) {
	full := func() bitmap {
		b := newBitmap()
		for i := range b {
			b[i] = ^uint64(0)
		}
		return b
	}
	setRange := func(b bitmap, from, to uint32) bitmap {
		for v := from; v < to; v++ {
			b.set(v)
		}
		return b
	}
	last := uint32(proto.NrVdis - 1)
	for _, tc := range []struct {
		name string
		b    bitmap
		from uint32
		want uint32
	}{
		{"empty from 0", newBitmap(), 0, 0},
		{"empty from 5", newBitmap(), 5, 5},
		{"empty at the last bit", newBitmap(), last, last},
		{"first word full", setRange(newBitmap(), 0, 64), 0, 64},
		{"two words full, start inside the first", setRange(newBitmap(), 0, 128), 10, 128},
		{"run crossing a word boundary", setRange(newBitmap(), 60, 70), 61, 70},
		{"clear bits below from are ignored", setRange(newBitmap(), 1, 64), 1, 64},
		{"bit 0 clear but from 1", setRange(newBitmap(), 1, 3), 1, 3},
		{"start in the middle of a word", setRange(newBitmap(), 64, 100), 80, 100},
		{"only the last bit clear", func() bitmap { b := full(); b[len(b)-1] &^= 1 << 63; return b }(), 1, last},
		{"only bit 0 clear, from 1", func() bitmap { b := full(); b[0] &^= 1; return b }(), 1, proto.NrVdis},
		{"full", full(), 0, proto.NrVdis},
		{"full from the last bit", full(), last, proto.NrVdis},
		{"from past the end", newBitmap(), proto.NrVdis, proto.NrVdis},
	} {
		if got := tc.b.firstClear(tc.from); got != tc.want {
			t.Errorf("%s: firstClear(%d) = %d, want %d", tc.name, tc.from, got, tc.want)
		}
	}
}

// TestBitmapLayout: READ_VDIS is Sheepdog's array of unsigned longs on
// x86-64: bit v is bit v%8 of byte v/8.
func TestBitmapLayout(t *testing.T) {
	s := formatted(t)
	vids := []uint32{1, 7, 8, 63, 64, 65, 0x7c2b25, proto.NrVdis - 1}
	for _, v := range vids {
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: v})
	}
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 63})
	for _, tc := range []struct {
		name string
		b    []byte
		want []uint32
	}{
		{"in-use", s.InUseBitmap(), vids},
		{"deleted", s.DeletedBitmap(), []uint32{63}},
	} {
		if len(tc.b) != 2<<20 {
			t.Fatalf("%s bitmap is %d bytes, want 2 MiB", tc.name, len(tc.b))
		}
		for _, v := range tc.want {
			if tc.b[v/8]&(1<<(v%8)) == 0 {
				t.Errorf("%s: bit %#x not at byte %#x bit %d", tc.name, v, v/8, v%8)
			}
		}
		n := 0
		for _, c := range tc.b {
			n += bits.OnesCount8(c)
		}
		if n != len(tc.want) {
			t.Errorf("%s: %d bits set, want %d", tc.name, n, len(tc.want))
		}
	}
	// Spot checks of the little-endian word layout.
	b := s.InUseBitmap()
	if b[7] != 0x80 || b[0] != 0x82 || b[1] != 0x01 || b[8] != 0x03 || b[len(b)-1] != 0x80 {
		t.Errorf("bytes 0,1,7,8,last = %#x %#x %#x %#x %#x", b[0], b[1], b[7], b[8], b[len(b)-1])
	}
}

func TestCloneIsIndependent(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 10})
	orig := s.Clone()
	c := s.Clone()

	mustApply(t, c, &Entry{Kind: KindAddVdi, Vid: 11})
	mustApply(t, c, &Entry{Kind: KindDelVdi, Vid: 10})
	mustApply(t, c, &Entry{Kind: KindLock, Vid: 11, Owner: nodeA.NodeID})
	mustApply(t, c, &Entry{Kind: KindEpoch, Nodes: []proto.Node{nodeA}})
	c.VdiState(10).NrCopies = 9

	if !reflect.DeepEqual(s, orig) {
		t.Fatal("changing a clone changed the original")
	}
	if s.InUse(11) || s.IsDeleted(10) || s.Epoch() != 1 || s.VdiState(10).NrCopies != 0 {
		t.Errorf("original sees the clone's changes: inuse(11)=%v deleted(10)=%v epoch=%d", s.InUse(11), s.IsDeleted(10), s.Epoch())
	}
	if !c.InUse(11) || !c.IsDeleted(10) || c.Epoch() != 2 {
		t.Error("the clone lost its own changes")
	}
	// And the other way round.
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 12})
	if c.InUse(12) {
		t.Error("changing the original changed the clone")
	}
}

// TestZeroState: the zero State is usable by readers before any Apply.
func TestZeroState(t *testing.T) {
	var s State
	if s.Formatted() || s.Epoch() != 0 || s.Nodes() != nil || s.VdiState(1) != nil || s.Status() != proto.StatusWait {
		t.Errorf("zero state: %v", &s)
	}
	c := s.Clone()
	if res := c.Apply(formatEntry()); res != proto.ResSuccess || c.Epoch() != 1 {
		t.Errorf("format of a clone of the zero state: %v epoch %d", res, c.Epoch())
	}
}

// An epoch entry computed from an epoch that is no longer the last (two
// proposers saw the same change) changes nothing; a forced one counts a
// generation.
func TestEpochBase(t *testing.T) {
	s := &State{}
	mustApply(t, s, formatEntry())
	e := &Entry{Kind: KindEpoch, Base: 1, Time: 1600000100, Nodes: []proto.Node{nodeA, nodeB}}
	mustApply(t, s, e)
	if res := s.Apply(e); res != proto.ResOldNodeVer || s.Epoch() != 2 {
		t.Fatalf("the same change again: %v, epoch %d", res, s.Epoch())
	}
	mustApply(t, s, &Entry{Kind: KindEpoch, Base: 2, Forced: true, Time: 1600000200 * 1e9, Nodes: []proto.Node{nodeA}})
	if s.Generation != 1 || !s.Epochs[2].Forced || s.Epochs[2].Time != 1600000200 {
		t.Fatalf("forced epoch: generation %d, record %+v", s.Generation, s.Epochs[2])
	}
	if res := s.Apply(&Entry{Kind: KindEpoch, Time: 1}); res != proto.ResInvalidParms {
		t.Fatalf("an epoch without nodes: %v", res)
	}
}

func TestObjectSize(t *testing.T) {
	s := &State{BlockSizeShift: 22, Vdis: map[uint32]*proto.VdiState{
		0xa: {Vid: 0xa, BlockSizeShift: 20},
		0xb: {Vid: 0xb},
	}}
	for _, c := range []struct {
		oid  uint64
		want int64
	}{
		{proto.VidToDataOid(0xa, 3), 1 << 20},     // the VDI's own block size
		{proto.VidToDataOid(0xb, 3), 4 << 20},     // none of its own: the cluster's
		{proto.VidToDataOid(0xc, 0), 4 << 20},     // unknown vid: the cluster's
		{proto.VidToVdiOid(0xa), proto.InodeSize}, // inodes are fixed
	} {
		if got := s.ObjectSize(c.oid); got != c.want {
			t.Errorf("ObjectSize(%016x) = %d, want %d", c.oid, got, c.want)
		}
	}
}

func TestAlterCopy(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 1, Copies: 3})
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 2, Copies: 2})
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 3, Copies: 6, CopyPolicy: 0x42}) // 4:2
	mustApply(t, s, &Entry{Kind: KindAlterCopy, Copies: 2})
	if s.NrCopies != 2 || s.Copies(1) != 2 || s.Copies(2) != 2 || s.Copies(3) != 6 {
		t.Errorf("after cluster alter to 2: default %d, vdis %d %d %d (the EC one keeps 6)", s.NrCopies, s.Copies(1), s.Copies(2), s.Copies(3))
	}
	mustApply(t, s, &Entry{Kind: KindAlterCopy, Vid: 2, Copies: 4})
	if s.Copies(1) != 2 || s.Copies(2) != 4 {
		t.Errorf("after vdi alter of 2 to 4: %d %d", s.Copies(1), s.Copies(2))
	}
	for _, e := range []*Entry{
		{Kind: KindAlterCopy, Vid: 3, Copies: 2},                   // erasure coded
		{Kind: KindAlterCopy, Vid: 2, Copies: 0},                   // no copies
		{Kind: KindAlterCopy, Vid: 2, Copies: proto.MaxCopies + 1}, // too many
		{Kind: KindAlterCopy, Copies: 2, CopyPolicy: 0x42},         // a policy
	} {
		if res := s.Apply(e); res != proto.ResInvalidParms {
			t.Errorf("%+v: %v, want INVALID_PARMS", e, res)
		}
	}
	if res := s.Apply(&Entry{Kind: KindAlterCopy, Vid: 99, Copies: 2}); res != proto.ResNoVdi {
		t.Errorf("alter of an unknown vid: %v", res)
	}
}

// With format -R, a family (a VDI, its snapshots and clones) whose members
// are all deleted can be recycled (KindRecycle frees all its vids); a
// family with a live member keeps them, and without -R nothing is freed.
func TestRecycleVidFamily(t *testing.T) {
	for _, recycle := range []bool{true, false} {
		s := NewState()
		var flags uint16
		if recycle {
			flags = proto.ClusterFlagRecycleVid
		}
		mustApply(t, s, &Entry{Kind: KindFormat, Ctime: 1, Flags: flags, Copies: 1, Nodes: []proto.Node{{}}})
		// 1 <- 2 <- 3 (snapshots, 3 working); 4 a clone of 2; 5 alone.
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 1})
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 2, ParentVid: 1, OldVid: 1, SnapshotOld: true})
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 3, ParentVid: 2, OldVid: 2, SnapshotOld: true})
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 4, ParentVid: 2})
		mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 5})
		if f := s.Family(3); !slices.Equal(f, []uint32{1, 2, 3, 4}) {
			t.Fatalf("family of 3: %v", f)
		}
		for _, v := range []uint32{3, 1, 2} {
			mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: v})
		}
		if s.Recyclable(1) || s.Apply(&Entry{Kind: KindRecycle, Vid: 1}) == proto.ResSuccess || !s.InUse(1) || !s.IsDeleted(1) {
			t.Fatal("a family with a live clone lost its vids")
		}
		mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 4})
		if s.Recyclable(4) != recycle {
			t.Fatalf("recycle=%v: Recyclable %v", recycle, s.Recyclable(4))
		}
		if recycle {
			mustApply(t, s, &Entry{Kind: KindRecycle, Vid: 4})
		} else if s.Apply(&Entry{Kind: KindRecycle, Vid: 4}) == proto.ResSuccess {
			t.Fatal("vids recycled without format -R")
		}
		for v := uint32(1); v <= 4; v++ {
			if s.InUse(v) == recycle || s.IsDeleted(v) == recycle || (s.VdiState(v) == nil) != recycle {
				t.Fatalf("recycle=%v: vid %d in use %v, deleted %v", recycle, v, s.InUse(v), s.IsDeleted(v))
			}
		}
		if !s.InUse(5) {
			t.Fatal("another family's vid was freed")
		}
		if recycle && s.FirstClear(1) != 1 {
			t.Fatalf("first free vid %d, want 1", s.FirstClear(1))
		}
	}
}

// TestDelVdiRestoresSnapshotOld: giving up a failed snapshot's new vid
// with SnapshotOld makes the old vid a working VDI again, unless another
// live VDI has it as its parent (a clone made since keeps it a snapshot).
func TestDelVdiRestoresSnapshotOld(t *testing.T) {
	s := formatted(t)
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 10, Copies: 3})
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 11, OldVid: 10, SnapshotOld: true, ParentVid: 10})
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 11, OldVid: 10, SnapshotOld: true})
	if v := s.VdiState(10); v.Snapshot {
		t.Errorf("the failed snapshot's old vid is still a snapshot: %+v", v)
	}
	if !s.IsDeleted(11) {
		t.Error("the failed snapshot's new vid is not deleted")
	}

	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 12, OldVid: 10, SnapshotOld: true, ParentVid: 10})
	mustApply(t, s, &Entry{Kind: KindAddVdi, Vid: 13, OldVid: 10, SnapshotOld: true, ParentVid: 10}) // a clone of it
	mustApply(t, s, &Entry{Kind: KindDelVdi, Vid: 12, OldVid: 10, SnapshotOld: true})
	if v := s.VdiState(10); !v.Snapshot {
		t.Error("a VDI with a live clone became a working VDI again")
	}
}
