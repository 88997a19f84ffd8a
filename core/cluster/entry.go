package cluster

import (
	"slices"
	"time"

	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Kind says what an Entry does.
type Kind uint8

// Entry kinds. Persisted: never renumber.
const (
	KindFormat    Kind = 1  // MAKE_FS
	KindShutdown  Kind = 2  // SHUTDOWN
	KindAddVdi    Kind = 3  // NEW_VDI main phase + NOTIFY_VDI_ADD
	KindDelVdi    Kind = 4  // DEL_VDI main phase
	KindLock      Kind = 5  // LOCK_VDI
	KindRelease   Kind = 6  // RELEASE_VDI
	KindEpoch     Kind = 7  // membership change: a new epoch with its nodes
	KindRecovery  Kind = 8  // ENABLE/DISABLE_RECOVER
	KindIdentity  Kind = 9  // the cluster's identity, set once by the node that bootstrapped it
	KindAttrClaim Kind = 10 // GET_VDI_ATTR with CREAT|EXCL: claim an attribute slot
	KindRecycle   Kind = 11 // format -R: free the vids of a family whose members are all deleted
	KindAlterCopy Kind = 12 // ALTER_CLUSTER_COPY (Vid 0) and ALTER_VDI_COPY: a new number of copies
)

// Entry is one ordered cluster operation. Only the fields of its Kind are
// used. Time values come from the proposer, never from Apply, so every node
// applies the same bytes to the same effect.
type Entry struct {
	Kind Kind

	// Time is when the proposer made the entry, in Unix nanoseconds, for
	// every kind (see UnixNano). Entries logged before the unit was fixed
	// carry seconds for Format and Epoch; epochSeconds tells them apart.
	Time int64 `json:",omitempty"`

	// Format and Epoch.
	Ctime          uint64       `json:",omitempty"`
	Copies         uint8        `json:",omitempty"`
	CopyPolicy     uint8        `json:",omitempty"`
	Flags          uint16       `json:",omitempty"`
	BlockSizeShift uint8        `json:",omitempty"`
	Store          string       `json:",omitempty"`
	Nodes          []proto.Node `json:",omitempty"`
	// Forced marks an epoch committed by `cluster recover force`: the
	// cluster was re-formed from the nodes present, without the others'
	// consent.
	Forced bool `json:",omitempty"`
	// Base is the epoch an Epoch entry's change was computed from: the
	// entry applies only on top of it (OLD_NODE_VER otherwise), so two
	// proposers seeing one change never commit it twice. 0: applies on
	// any epoch.
	Base uint32 `json:",omitempty"`

	// AddVdi, DelVdi, Lock, Release.
	Vid         uint32       `json:",omitempty"`
	OldVid      uint32       `json:",omitempty"`
	SnapshotOld bool         `json:",omitempty"`
	ParentVid   uint32       `json:",omitempty"`
	Owner       proto.NodeID `json:",omitempty"`
	Token       uint64       `json:",omitempty"` // Lock: unique per request

	// Recovery.
	DisableRecovery bool `json:",omitempty"`

	// Identity: a random id naming the cluster from its bootstrap on.
	ClusterID string `json:",omitempty"`

	// AttrClaim: the attribute object and the identity of the record
	// (name, tag, snap_id and key) that wants it.
	Oid    uint64 `json:",omitempty"`
	AttrID string `json:",omitempty"`
}

// UnixNano is the time unit of Entry.Time.
func UnixNano(t time.Time) int64 { return t.UnixNano() }

// epochSeconds turns an entry's Time into the time_t an epoch record
// keeps. Values below 1e12 are seconds already: entries logged before
// Entry.Time was nanoseconds everywhere (1e12 s is in the year 33658,
// 1e12 ns is 1970-01-01T00:16:40Z, so the ranges cannot meet).
func epochSeconds(t int64) int64 {
	if t < 1e12 {
		return t
	}
	return t / int64(time.Second)
}

// NewEpoch is the one constructor of epoch entries: the epoch after base
// (0: after whichever is current when it applies) with nodes in Sheepdog's
// node order, automatic vnodes applied when the cluster uses them (auto),
// stamped with now.
func NewEpoch(base uint32, nodes []proto.Node, auto, forced bool, now time.Time) *Entry {
	n := slices.Clone(nodes)
	if auto {
		n = placement.AutoVnodes(n)
	}
	return &Entry{Kind: KindEpoch, Base: base, Nodes: sortedNodes(n), Forced: forced, Time: UnixNano(now)}
}
