package server

import (
	"context"

	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/store"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// What a Handler uses of the rest of a sheep, each as the interface of
// exactly the calls it makes. cmd/sheep passes the real parts (asserted
// below); a test may pass its own.

// LocalStore is this node's own copies: the peer ops and the node's
// statistics (store.Store).
type LocalStore interface {
	Exists(oid uint64) bool
	ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error
	WriteAt(ctx context.Context, oid uint64, data []byte, off int64, sync bool) error
	Create(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	CreateOrWrite(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	Punch(ctx context.Context, oid uint64, off, n int64, sync bool) error
	Remove(ctx context.Context, oid uint64) error
	Flush(ctx context.Context) error
	Repair(ctx context.Context, oid uint64, good []byte) (int, error)
	SHA1(oid uint64) ([20]byte, error)
	List() ([]uint64, error)
	ListStale() ([]store.StaleObject, error)
	ReadStale(oid uint64, epoch uint32) ([]byte, error)
	Capacity() (size, free uint64, err error)
	Used() (uint64, error)
}

// Objects is replicated object I/O on behalf of clients (gateway.Gateway).
type Objects interface {
	ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error
	WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error
	RemoveObject(ctx context.Context, oid uint64) error
	// Holds reports whether the current epoch places a copy of oid here.
	Holds(ctx context.Context, oid uint64) bool
	// Peers are the connections to the other sheeps.
	Peers() *gateway.Peers
}

// VDIs is the VDI operations (vdi.Service).
type VDIs interface {
	Lookup(ctx context.Context, name, tag string, snapid uint32) (vdi.Info, error)
	New(ctx context.Context, p vdi.NewParams) (vdi.Info, error)
	Delete(ctx context.Context, name, tag string, snapid uint32) (uint32, error)
	Lock(ctx context.Context, vid uint32, owner proto.NodeID) error
	Release(ctx context.Context, vid uint32) error
	Attr(ctx context.Context, rec []byte, snapid uint32, f vdi.AttrFlags) (vdi.AttrResult, error)
	// WriteTable writes into an inode's data_vdi_id table and reclaims
	// what the write dropped.
	WriteTable(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	// Decref drops a reference to a data object (DECREF_OBJ).
	Decref(ctx context.Context, dataOid uint64, gen, count uint32) error
}

// Recovery is this node's recovery (recovery.Recovery).
type Recovery interface {
	// Settle waits until the local copies are settled for the epoch.
	Settle(ctx context.Context) bool
	// Trusted reports whether the local copies may be served.
	Trusted() bool
	State() proto.RecoveryState
	// WaitRecovered waits until the node has recovered epoch.
	WaitRecovered(ctx context.Context, epoch uint32) bool
	GetThrottle() recovery.Throttle
	SetThrottle(t recovery.Throttle)
}

var (
	_ LocalStore = (*store.Store)(nil)
	_ LocalStore = (*md.Store)(nil)
	_ Objects    = (*gateway.Gateway)(nil)
	_ VDIs       = (*vdi.Service)(nil)
	_ Recovery   = (*recovery.Recovery)(nil)
)
