package cluster

import "github.com/sheepdog-go/sheepdog/core/proto"

// Kind says what an Entry does.
type Kind uint8

// Entry kinds. Persisted: never renumber.
const (
	KindFormat   Kind = 1 // MAKE_FS
	KindShutdown Kind = 2 // SHUTDOWN
	KindAddVdi   Kind = 3 // NEW_VDI main phase + NOTIFY_VDI_ADD
	KindDelVdi   Kind = 4 // DEL_VDI main phase
	KindLock     Kind = 5 // LOCK_VDI
	KindRelease  Kind = 6 // RELEASE_VDI
	KindEpoch    Kind = 7 // membership change: a new epoch with its nodes
	KindRecovery Kind = 8 // ENABLE/DISABLE_RECOVER
)

// Entry is one ordered cluster operation. Only the fields of its Kind are
// used. Time values come from the proposer, never from Apply, so every node
// applies the same bytes to the same effect.
type Entry struct {
	Kind Kind

	// Format and Epoch.
	Ctime          uint64       `json:",omitempty"`
	Time           int64        `json:",omitempty"`
	Copies         uint8        `json:",omitempty"`
	CopyPolicy     uint8        `json:",omitempty"`
	Flags          uint16       `json:",omitempty"`
	BlockSizeShift uint8        `json:",omitempty"`
	Store          string       `json:",omitempty"`
	Nodes          []proto.Node `json:",omitempty"`

	// AddVdi, DelVdi, Lock, Release.
	Vid         uint32       `json:",omitempty"`
	OldVid      uint32       `json:",omitempty"`
	SnapshotOld bool         `json:",omitempty"`
	ParentVid   uint32       `json:",omitempty"`
	Owner       proto.NodeID `json:",omitempty"`
	Token       uint64       `json:",omitempty"` // Lock: unique per request

	// Recovery.
	DisableRecovery bool `json:",omitempty"`
}
