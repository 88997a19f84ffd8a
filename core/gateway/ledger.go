package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/store"
)

// Ledger objects (proto.LedgerDecref, docs/protocol.md §4.7): each copy of
// a ledger is changed by DECREF_PEER on the node that holds it, never by a
// gateway write, because a drop is a change relative to what the copy
// holds (a counter minus one), not bytes to put.

// LedgerStore is what applying a drop needs of a node's store.
type LedgerStore interface {
	Exists(oid uint64) bool
	ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error
	WriteAt(ctx context.Context, oid uint64, data []byte, off int64, sync bool) error
	CreateOrWrite(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	Remove(ctx context.Context, oid uint64) error
}

// ApplyDecref applies the drop of a reference of generation gen, copied
// count times, to this node's copy of the ledger ledgerOid: a missing copy
// starts as the ledger of an object with one reference. It writes the
// counters that changed, or removes the copy when it is all zero, and
// reports that. It holds the object's lock (locks) throughout, so drops
// on one node never lose each other's change.
func ApplyDecref(ctx context.Context, st LedgerStore, locks *store.Locks, ledgerOid uint64, gen, count uint32, sync bool) (zero bool, err error) {
	if !proto.IsLedgerObj(ledgerOid) || proto.IsVdiObj(ledgerOid) {
		return false, fmt.Errorf("decref %016x: not a ledger: %w", ledgerOid, proto.ResInvalidParms)
	}
	locks.Lock(ledgerOid)
	defer locks.Unlock(ledgerOid)
	bp := bufpool.Get(proto.LedgerSize)
	defer bufpool.Put(bp)
	l := *bp
	fresh := !st.Exists(ledgerOid)
	if fresh {
		clear(l)
	} else if err := st.ReadAt(ctx, ledgerOid, l, 0); err != nil {
		return false, fmt.Errorf("read ledger %016x: %w", ledgerOid, err)
	}
	zero, lo, hi, err := proto.LedgerDecref(l, fresh, gen, count)
	if err != nil {
		return false, fmt.Errorf("decref %016x: %w", ledgerOid, err)
	}
	switch {
	case zero && fresh:
		// Generation 0 copied by nobody: no ledger was ever needed
		// (callers remove such an object outright).
	case zero:
		if err := st.Remove(ctx, ledgerOid); err != nil && !errors.Is(err, proto.ResNoObj) {
			return false, fmt.Errorf("remove ledger %016x: %w", ledgerOid, err)
		}
	case fresh:
		err = st.CreateOrWrite(ctx, ledgerOid, proto.LedgerSize, int64(lo), l[lo:hi], sync)
	default:
		err = st.WriteAt(ctx, ledgerOid, l[lo:hi], int64(lo), sync)
	}
	if err != nil {
		return false, fmt.Errorf("update ledger %016x: %w", ledgerOid, err)
	}
	return zero, nil
}

// refused reports a peer's answer that says it did not apply the request
// (an epoch mismatch, a node not serving): safe to send again. A network
// failure is not one: the request may have been applied.
func refused(err error) bool {
	switch proto.ResultOf(err) {
	case proto.ResOldNodeVer, proto.ResNewNodeVer, proto.ResWaitForJoin, proto.ResKilled, proto.ResShutdown:
		return !errors.Is(err, proto.ResNetworkError) && !isNetErr(err)
	}
	return false
}

// Decref sends the drop of a reference of generation gen, copied count
// times, to every copy of the ledger ledgerOid (DECREF_PEER), and reports
// whether a copy became all zero: then no reference to the data object
// is left.
//
// Invariant: each node gets the drop at most once. A copy that applied a
// drop twice could reach zero while references remain; one that missed
// it only keeps the object (proto.LedgerDecref). So a node is asked again
// only after it refused (epoch mismatch, retried once the epoch settles,
// for up to 30 s); after a network failure the outcome is unknown and the
// node is left out, and its error returned.
func (g *Gateway) Decref(ctx context.Context, ledgerOid uint64, gen, count uint32) (zero bool, err error) {
	var mu sync.Mutex
	asked := map[proto.NodeID]bool{} // applied, or outcome unknown
	var lost error                   // the first outcome left unknown
	deadline := time.Now().Add(30 * time.Second)
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		p := g.plan(ctx, ledgerOid)
		var again error // a refusal: that node is asked again
		forEach(p.targets, func(n proto.Node) error {
			mu.Lock()
			skip := asked[n.NodeID]
			mu.Unlock()
			if skip {
				return nil
			}
			z, err := g.decrefOne(ctx, p, n, ledgerOid, gen, count)
			mu.Lock()
			defer mu.Unlock()
			zero = zero || z
			switch {
			case err != nil && refused(err):
				again = err
			case err != nil:
				asked[n.NodeID] = true
				if lost == nil {
					lost = err
				}
			default:
				asked[n.NodeID] = true
			}
			return nil
		})
		if again == nil {
			return zero, lost
		}
		if time.Now().After(deadline) {
			return zero, again
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// decrefOne applies a drop to the copy of the ledger on node n.
func (g *Gateway) decrefOne(ctx context.Context, p plan, n proto.Node, ledgerOid uint64, gen, count uint32) (bool, error) {
	if g.isSelf(n) {
		if !g.settled(ctx) {
			return false, fmt.Errorf("%016x: local copies not settled for the epoch yet: %w", ledgerOid, proto.ResNewNodeVer)
		}
		return ApplyDecref(ctx, g.store, g.locks, ledgerOid, gen, count, true)
	}
	r := proto.NewRequest(proto.OpDecrefPeer)
	r.Epoch = p.epoch
	r.SetRef(proto.RefArgs{Oid: ledgerOid, Generation: gen, Count: count})
	var reply [1]byte
	_, got, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, reply[:])
	if err != nil {
		return false, err
	}
	return got == 1 && reply[0] == 1, nil
}
