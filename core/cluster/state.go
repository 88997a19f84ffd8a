// Package cluster holds what every sheep of a cluster agrees on: the
// cluster_info (ctime, copies, policy, flags, status), the epoch log, the
// VDI in-use and deleted bitmaps, each vid's vdi_state and the VDI locks.
//
// State is a pure state machine: Apply takes one Entry and changes the
// state deterministically, with no I/O, clock or goroutines. How entries are
// ordered (one node applying directly, or a replicated log) is the driver's
// business, not the state machine's.
package cluster

import (
	"fmt"
	"maps"
	"slices"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// EpochRecord is one membership version: its number, the wall time it was
// committed (time_t) and the node list, sorted in Sheepdog's node order.
type EpochRecord struct {
	Epoch uint32
	Time  int64
	Nodes []proto.Node
	// Forced: committed by `cluster recover force` (see Entry.Forced).
	Forced bool `json:",omitempty"`
}

// State is the replicated cluster state. The zero value is an unformatted
// cluster (status WAIT, ctime 0). Readers must not modify returned slices.
type State struct {
	Ctime           uint64
	Flags           uint16
	NrCopies        uint8
	CopyPolicy      uint8
	BlockSizeShift  uint8
	Store           string
	DisableRecovery bool

	// Epochs is the epoch log, oldest first. Invariant: Epochs[i].Epoch ==
	// i+1 after a format; empty before.
	Epochs []EpochRecord

	// Vdis is the vdi_state of every vid whose in-use bit is set.
	// Invariant: inuse bit v is set ⇔ Vdis[v] exists; deleted bit v is set
	// ⇔ Vdis[v].Deleted.
	Vdis map[uint32]*proto.VdiState

	// LockTokens holds, per locked vid, the token of the LOCK entry that
	// took the lock: the same entry applied again (a proposal retried
	// after its answer was lost) is answered SUCCESS, any other lock
	// VDI_LOCKED, whichever node asks (as Sheepdog's vdi_lock).
	LockTokens map[uint32]uint64 `json:",omitempty"`

	// ClusterID names the cluster from its bootstrap on (KindIdentity):
	// nodes gossip it, and refuse peers of another cluster. Empty on a node
	// that has not learnt it yet.
	ClusterID string `json:",omitempty"`
	// Generation counts the forced epochs: a node whose replicated log
	// stems from an older generation was left behind by a re-formed
	// cluster and must rejoin it afresh.
	Generation uint32 `json:",omitempty"`

	// Attrs holds, per claimed attribute object, the identity of the
	// record that claimed it (KindAttrClaim): of concurrent exclusive
	// creates of one record exactly one wins.
	Attrs map[uint64]string `json:",omitempty"`

	inuse   bitmap
	deleted bitmap
}

// Formatted reports whether MAKE_FS has run.
func (s *State) Formatted() bool { return s.Ctime != 0 }

// Epoch is the current epoch (0 before format).
func (s *State) Epoch() uint32 {
	if len(s.Epochs) == 0 {
		return 0
	}
	return s.Epochs[len(s.Epochs)-1].Epoch
}

// Nodes is the node list of the current epoch.
func (s *State) Nodes() []proto.Node {
	if len(s.Epochs) == 0 {
		return nil
	}
	return s.Epochs[len(s.Epochs)-1].Nodes
}

// EpochNodes returns the node list of epoch e, or nil.
func (s *State) EpochNodes(e uint32) []proto.Node {
	if e == 0 || int(e) > len(s.Epochs) {
		return nil
	}
	return s.Epochs[e-1].Nodes
}

// Status is the cluster status as cluster_info.status encodes it.
func (s *State) Status() uint8 {
	if !s.Formatted() {
		return proto.StatusWait
	}
	return proto.StatusOK
}

// InUse reports whether the in-use bit of vid is set.
func (s *State) InUse(vid uint32) bool { return s.inuse.get(vid) }

// IsDeleted reports whether the deleted bit of vid is set.
func (s *State) IsDeleted(vid uint32) bool { return s.deleted.get(vid) }

// FirstClear returns the first vid ≥ from whose in-use bit is clear, or
// proto.NrVdis if there is none.
func (s *State) FirstClear(from uint32) uint32 { return s.inuse.firstClear(from) }

// InUseBitmap encodes the in-use bitmap as READ_VDIS returns it (2 MiB).
func (s *State) InUseBitmap() []byte { return s.inuse.bytes() }

// DeletedBitmap encodes the deleted bitmap as READ_DEL_VDIS returns it.
func (s *State) DeletedBitmap() []byte { return s.deleted.bytes() }

// VdiState returns the state of vid, or nil.
func (s *State) VdiState(vid uint32) *proto.VdiState { return s.Vdis[vid] }

// Copies is the number of copies for objects of vid: the VDI's own count,
// or the cluster default when the vid is unknown.
func (s *State) Copies(vid uint32) uint8 {
	if v := s.Vdis[vid]; v != nil && v.NrCopies != 0 {
		return v.NrCopies
	}
	return s.NrCopies
}

// BlockShift is the object size shift of vid's objects: the VDI's own,
// else the cluster's.
func (s *State) BlockShift(vid uint32) uint8 {
	if v := s.Vdis[vid]; v != nil && v.BlockSizeShift != 0 {
		return v.BlockSizeShift
	}
	return s.BlockSizeShift
}

// ObjectSize is the size of oid's object: an inode's fixed size, or the
// block size of its VDI.
func (s *State) ObjectSize(oid uint64) int64 {
	return proto.ObjectSize(oid, s.BlockShift(proto.OidToVid(oid)))
}

// SortedVids returns every registered vid in ascending order.
func (s *State) SortedVids() []uint32 {
	vids := make([]uint32, 0, len(s.Vdis))
	for v := range s.Vdis {
		vids = append(vids, v)
	}
	slices.Sort(vids)
	return vids
}

// Clone returns a deep copy, for readers that need a stable view while the
// original keeps changing.
func (s *State) Clone() *State {
	c := *s
	c.Epochs = slices.Clone(s.Epochs)
	c.Attrs = maps.Clone(s.Attrs)
	c.Vdis = make(map[uint32]*proto.VdiState, len(s.Vdis))
	for k, v := range s.Vdis {
		vv := *v
		c.Vdis[k] = &vv
	}
	c.inuse = s.inuse.clone()
	c.deleted = s.deleted.clone()
	return &c
}

// rebuild recomputes the derived bitmaps from Vdis (after decoding a
// persisted state).
func (s *State) rebuild() {
	s.inuse = newBitmap()
	s.deleted = newBitmap()
	for vid, v := range s.Vdis {
		s.inuse.set(vid)
		if v.Deleted {
			s.deleted.set(vid)
		}
	}
}

func (s *State) init() {
	if s.Vdis == nil {
		s.Vdis = make(map[uint32]*proto.VdiState)
	}
	if s.inuse == nil {
		s.rebuild()
	}
}

// Apply applies one entry and returns its result. A non-success result
// means the entry changed nothing.
func (s *State) Apply(e *Entry) proto.Result {
	s.init()
	// Before MAKE_FS only format and shutdown mean anything; everything
	// else is refused the way the node gate refuses requests.
	if !s.Formatted() {
		switch e.Kind {
		case KindAddVdi, KindDelVdi, KindLock, KindRelease, KindEpoch, KindRecovery, KindAlterCopy, KindRecycle:
			return proto.ResWaitForFormat
		}
	}
	switch e.Kind {
	case KindFormat:
		return s.applyFormat(e)
	case KindShutdown:
		// Stopping is a side effect each node runs for a live entry (see
		// the driver's OnApply); a replayed log must not stop anyone, so
		// the state does not change.
		return proto.ResSuccess
	case KindAddVdi:
		return s.applyAddVdi(e)
	case KindDelVdi:
		return s.applyDelVdi(e)
	case KindLock:
		return s.applyLock(e)
	case KindRelease:
		return s.applyRelease(e)
	case KindEpoch:
		return s.applyEpoch(e)
	case KindRecovery:
		s.DisableRecovery = e.DisableRecovery
		return proto.ResSuccess
	case KindIdentity:
		return s.applyIdentity(e)
	case KindAttrClaim:
		return s.applyAttrClaim(e)
	case KindAlterCopy:
		return s.applyAlterCopy(e)
	case KindRecycle:
		return s.applyRecycle(e)
	}
	return proto.ResInvalidParms
}

// applyAlterCopy sets the number of copies of one replicated VDI (Vid),
// or, with Vid 0, the cluster's default and that of every replicated
// VDI (Sheepdog 1.0 changes only the default, for VDIs created later;
// here the data already stored follows too, so that a cluster's
// redundancy is one number). Erasure-coded VDIs keep their policy. The
// new placement takes effect at once: recovery, started by the node on
// this entry, copies or drops objects to match.
func (s *State) applyAlterCopy(e *Entry) proto.Result {
	if e.Copies == 0 || e.Copies > proto.MaxCopies || e.CopyPolicy != 0 {
		return proto.ResInvalidParms
	}
	if e.Vid != 0 {
		v := s.Vdis[e.Vid]
		if v == nil || v.Deleted {
			return proto.ResNoVdi
		}
		if v.CopyPolicy != 0 {
			return proto.ResInvalidParms
		}
		v.NrCopies = e.Copies
		return proto.ResSuccess
	}
	if s.CopyPolicy != 0 {
		return proto.ResInvalidParms
	}
	s.NrCopies = e.Copies
	for _, v := range s.Vdis {
		if v.CopyPolicy == 0 {
			v.NrCopies = e.Copies
		}
	}
	return proto.ResSuccess
}

// applyIdentity sets the cluster's id once; a second, different id (a
// stale proposal of a node that bootstrapped on its own) changes nothing.
func (s *State) applyIdentity(e *Entry) proto.Result {
	switch {
	case e.ClusterID == "":
		return proto.ResInvalidParms
	case s.ClusterID == "":
		s.ClusterID = e.ClusterID
		return proto.ResSuccess
	case s.ClusterID == e.ClusterID:
		return proto.ResSuccess
	}
	return proto.ResInvalidParms
}

// applyAttrClaim claims attribute object e.Oid for the record e.AttrID:
// SUCCESS when it was free, VDI_EXIST when this record holds it already,
// NO_OBJ (the slot is taken: probe on) when another record does.
func (s *State) applyAttrClaim(e *Entry) proto.Result {
	if e.Oid == 0 || e.AttrID == "" {
		return proto.ResInvalidParms
	}
	switch owner, ok := s.Attrs[e.Oid]; {
	case !ok:
		if s.Attrs == nil {
			s.Attrs = map[uint64]string{}
		}
		s.Attrs[e.Oid] = e.AttrID
		return proto.ResSuccess
	case owner == e.AttrID:
		return proto.ResVdiExist
	}
	return proto.ResNoObj
}

func (s *State) applyFormat(e *Entry) proto.Result {
	if e.Ctime == 0 || len(e.Nodes) == 0 {
		return proto.ResInvalidParms
	}
	s.Ctime = e.Ctime
	s.Flags = e.Flags
	s.NrCopies = e.Copies
	s.CopyPolicy = e.CopyPolicy
	s.BlockSizeShift = e.BlockSizeShift
	s.Store = e.Store
	s.DisableRecovery = false
	s.Epochs = []EpochRecord{{Epoch: 1, Time: epochSeconds(e.Time), Nodes: sortedNodes(e.Nodes)}}
	s.Vdis = make(map[uint32]*proto.VdiState)
	s.LockTokens = nil
	s.Attrs = nil
	s.rebuild()
	return proto.ResSuccess
}

func (s *State) applyAddVdi(e *Entry) proto.Result {
	if !s.Formatted() {
		return proto.ResWaitForFormat
	}
	if e.Vid == 0 || e.Vid >= proto.NrVdis {
		return proto.ResInvalidParms
	}
	// The vid was chosen by a lookup against an earlier state; if another
	// entry took it since, the proposer must look up again.
	if s.inuse.get(e.Vid) {
		return proto.ResVdiExist
	}
	if e.OldVid != 0 {
		if old := s.Vdis[e.OldVid]; old != nil && e.SnapshotOld {
			old.Snapshot = true
		}
	}
	s.Vdis[e.Vid] = &proto.VdiState{
		Vid: e.Vid, NrCopies: e.Copies, CopyPolicy: e.CopyPolicy,
		BlockSizeShift: e.BlockSizeShift, ParentVid: e.ParentVid,
		LockState: proto.LockStateUnlocked,
	}
	s.inuse.set(e.Vid)
	return proto.ResSuccess
}

// applyDelVdi marks e.Vid deleted. With SnapshotOld it undoes a snapshot
// whose new working VDI could not be made (core/vdi's abandon): OldVid,
// which that entry made a snapshot, is a working VDI again, unless
// another entry took that role since (a live VDI other than Vid names
// OldVid as its parent).
func (s *State) applyDelVdi(e *Entry) proto.Result {
	v := s.Vdis[e.Vid]
	if v == nil {
		return proto.ResNoVdi
	}
	if e.SnapshotOld && e.OldVid != 0 {
		if old := s.Vdis[e.OldVid]; old != nil && old.Snapshot && !old.Deleted && !s.hasLiveChild(e.OldVid, e.Vid) {
			old.Snapshot = false
		}
	}
	v.Deleted = true
	v.LockState = proto.LockStateUnlocked
	v.LockOwner = proto.NodeID{}
	delete(s.LockTokens, e.Vid)
	s.deleted.set(e.Vid)
	return proto.ResSuccess
}

// Family returns the vids of vid's family: the root reached by following
// parent vids (snapshots and clones name their parent), and every vid
// descending from it, in vid order.
func (s *State) Family(vid uint32) []uint32 {
	root := vid
	for seen := 0; seen < len(s.Vdis); seen++ {
		p := s.Vdis[root].ParentVid
		if p == 0 || p == root || s.Vdis[p] == nil {
			break
		}
		root = p
	}
	children := map[uint32][]uint32{}
	for v, st := range s.Vdis {
		if st.ParentVid != 0 && st.ParentVid != v {
			children[st.ParentVid] = append(children[st.ParentVid], v)
		}
	}
	family := []uint32{root}
	seen := map[uint32]bool{root: true}
	for i := 0; i < len(family); i++ {
		for _, c := range children[family[i]] {
			if !seen[c] {
				seen[c] = true
				family = append(family, c)
			}
		}
	}
	slices.Sort(family)
	return family
}

// Recyclable reports whether the vids of vid's family may be freed: the
// cluster was formatted with -R and every member is deleted.
func (s *State) Recyclable(vid uint32) bool {
	if s.Flags&proto.ClusterFlagRecycleVid == 0 || s.Vdis[vid] == nil {
		return false
	}
	for _, v := range s.Family(vid) {
		if !s.Vdis[v].Deleted {
			return false
		}
	}
	return true
}

// applyRecycle frees the vids of e.Vid's family once every member is
// deleted (format -R, Sheepdog's run_vid_gc): their vdi_states go and
// their in-use and deleted bits are cleared, so that new VDIs take them
// again. The proposer removed their inode objects first: a vid is free
// only once nothing of its old VDI is left to be mistaken for a new one.
func (s *State) applyRecycle(e *Entry) proto.Result {
	if !s.Recyclable(e.Vid) {
		return proto.ResInvalidParms
	}
	for _, v := range s.Family(e.Vid) {
		delete(s.Vdis, v)
		s.inuse.clear(v)
		s.deleted.clear(v)
	}
	return proto.ResSuccess
}

func (s *State) applyLock(e *Entry) proto.Result {
	v := s.Vdis[e.Vid]
	if v == nil || v.Deleted {
		return proto.ResNoVdi
	}
	if v.LockState == proto.LockStateLocked {
		if e.Token != 0 && s.LockTokens[e.Vid] == e.Token && v.LockOwner == e.Owner {
			return proto.ResSuccess // this very lock, applied again
		}
		return proto.ResVdiLocked
	}
	v.LockState = proto.LockStateLocked
	v.LockOwner = e.Owner
	if s.LockTokens == nil {
		s.LockTokens = map[uint32]uint64{}
	}
	s.LockTokens[e.Vid] = e.Token
	return proto.ResSuccess
}

func (s *State) applyRelease(e *Entry) proto.Result {
	v := s.Vdis[e.Vid]
	if v == nil {
		return proto.ResNoVdi
	}
	if v.LockState != proto.LockStateLocked {
		return proto.ResVdiNotLocked
	}
	v.LockState = proto.LockStateUnlocked
	v.LockOwner = proto.NodeID{}
	delete(s.LockTokens, e.Vid)
	return proto.ResSuccess
}

func (s *State) applyEpoch(e *Entry) proto.Result {
	if !s.Formatted() {
		return proto.ResWaitForFormat
	}
	if len(e.Nodes) == 0 {
		return proto.ResInvalidParms
	}
	if e.Base != 0 && e.Base != s.Epoch() {
		return proto.ResOldNodeVer // computed from an epoch that is no longer the last
	}
	s.Epochs = append(s.Epochs, EpochRecord{Epoch: s.Epoch() + 1, Time: epochSeconds(e.Time), Nodes: sortedNodes(e.Nodes), Forced: e.Forced})
	if e.Forced {
		s.Generation++
	}
	// A node that left drops its locks.
	for vid, v := range s.Vdis {
		if v.LockState == proto.LockStateLocked && !containsNode(e.Nodes, v.LockOwner) {
			v.LockState = proto.LockStateUnlocked
			v.LockOwner = proto.NodeID{}
			delete(s.LockTokens, vid)
		}
	}
	return proto.ResSuccess
}

func sortedNodes(nodes []proto.Node) []proto.Node {
	n := slices.Clone(nodes)
	slices.SortFunc(n, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	return n
}

func containsNode(nodes []proto.Node, id proto.NodeID) bool {
	for _, n := range nodes {
		if n.Addr == id.Addr && n.Port == id.Port {
			return true
		}
	}
	return false
}

// String summarises the state for logs.
func (s *State) String() string {
	return fmt.Sprintf("cluster{ctime=%x epoch=%d copies=%d vdis=%d}", s.Ctime, s.Epoch(), s.NrCopies, len(s.Vdis))
}

// NewState returns an empty, unformatted state.
func NewState() *State {
	s := &State{}
	s.init()
	return s
}

// Rebuild makes a state decoded from JSON (a driver's snapshot) usable:
// the bitmaps are derived, not persisted.
func (s *State) Rebuild() {
	s.init()
	s.rebuild()
}

// hasLiveChild reports whether a VDI other than except, not deleted,
// has vid as its parent.
func (s *State) hasLiveChild(vid, except uint32) bool {
	for id, v := range s.Vdis {
		if id != except && !v.Deleted && v.ParentVid == vid {
			return true
		}
	}
	return false
}
