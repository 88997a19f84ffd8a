package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// Repairing bad copies (docs/design.md §8 "Local store"). A copy whose bytes no
// longer match the store's checksums fails with store.ErrChecksum locally
// and answers EIO to a peer. The gateway then serves the request from
// another copy and repairs the bad one from it:
//
//   - its own copy with store.Repair, which rewrites only the chunks that
//     fail their checksums, under the object's stripe of Locks;
//   - a peer's copy with REPAIR_REPLICA, which makes the peer do the same
//     on its side, under its own lock.
//
// Rewriting only the bad chunks, on the node that holds them and under the
// lock its writers take, is what makes a repair safe while the object is
// being written: a write that reached the bad copy before the good one was
// read is not undone (it is in a chunk that verifies), and a write that
// had not reached it yet is applied after the repair.

// repairLocal repairs this node's copy of oid from the copy on node from.
// The caller holds no lock on oid; the good copy is read without it too,
// which is then taken with the read still valid (store.Locks.LockAfter).
func (g *Gateway) repairLocal(ctx context.Context, p plan, oid uint64, from proto.Node) error {
	good := make([]byte, p.size)
	err := g.locks.LockAfter(oid, func() error {
		if err := g.peerRead(ctx, from, p.epoch, oid, 0, good); err != nil {
			return fmt.Errorf("repair %016x: read the copy on %s: %w", oid, from.NodeID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer g.locks.Unlock(oid)
	return g.repairWith(ctx, oid, from, good)
}

// repairLocalLocked is repairLocal with oid's lock held.
func (g *Gateway) repairLocalLocked(ctx context.Context, p plan, oid uint64, from proto.Node) error {
	good := make([]byte, p.size)
	if err := g.peerRead(ctx, from, p.epoch, oid, 0, good); err != nil {
		return fmt.Errorf("repair %016x: read the copy on %s: %w", oid, from.NodeID, err)
	}
	return g.repairWith(ctx, oid, from, good)
}

// repairWith rewrites the bad chunks of this node's copy of oid from good,
// read from node from. The caller holds oid's lock.
func (g *Gateway) repairWith(ctx context.Context, oid uint64, from proto.Node, good []byte) error {
	n, err := g.store.Repair(ctx, oid, good)
	if err != nil {
		return fmt.Errorf("repair %016x from %s: %w", oid, from.NodeID, err)
	}
	g.log.Warn("repaired local copy", "oid", fmt.Sprintf("%016x", oid), "from", from.NodeID.String(), "chunks", n)
	return nil
}

// repairPeer asks node bad to repair its copy of oid from node from.
func (g *Gateway) repairPeer(ctx context.Context, p plan, oid uint64, bad, from proto.Node) error {
	r := proto.RepairRequest(p.epoch, oid, from.NodeID, proto.FlagRepairBadChunks)
	if _, _, err := g.peers.Call(ctx, g.peers.Addr(bad.NodeID), &r, nil, nil); err != nil {
		return fmt.Errorf("repair %016x on %s from %s: %w", oid, bad.NodeID, from.NodeID, err)
	}
	g.log.Warn("repaired copy on peer", "oid", fmt.Sprintf("%016x", oid), "node", bad.NodeID.String(), "from", from.NodeID.String())
	return nil
}

// Holds reports whether the current epoch places a copy of oid on this
// node.
func (g *Gateway) Holds(ctx context.Context, oid uint64) bool {
	return g.isTarget(g.plan(ctx, oid))
}

// repairAfterRead repairs the copies a read found bad, once it was served
// from node from: this node's copy when local is set, and each of bad.
// Failures are logged: the read itself has succeeded.
func (g *Gateway) repairAfterRead(ctx context.Context, p plan, oid uint64, from proto.Node, local bool, bad []proto.Node) {
	if local {
		if err := g.repairLocal(ctx, p, oid, from); err != nil {
			g.log.Error("read repair", "err", err)
		}
	}
	for _, n := range bad {
		if err := g.repairPeer(ctx, p, oid, n, from); err != nil {
			g.log.Error("read repair", "err", err)
		}
	}
}

// isBadCopy reports a peer read failure that means the peer's copy is bad
// (checksum mismatch or unreadable), as opposed to missing or elsewhere.
func isBadCopy(err error) bool {
	return proto.ResultOf(err) == proto.ResEIO && !isNetErr(err) && !errors.Is(err, proto.ResNetworkError)
}

// healedWrite runs write, the write of one copy on node n. If the copy is
// bad where the write only partly covers a chunk (the store refuses to
// combine new bytes with a bad chunk), it repairs the copy from another
// target and runs write once more.
func (g *Gateway) healedWrite(ctx context.Context, p plan, oid uint64, n proto.Node, write func() error) error {
	err := write()
	self := g.isSelf(n)
	if err == nil || (self && !errors.Is(err, store.ErrChecksum)) || (!self && !isBadCopy(err)) {
		return err
	}
	for _, from := range p.targets {
		if from.Same(n.NodeID) {
			continue
		}
		var rerr error
		if self {
			rerr = g.repairLocal(ctx, p, oid, from)
		} else {
			rerr = g.repairPeer(ctx, p, oid, n, from)
		}
		if rerr != nil {
			g.log.Warn("write repair", "err", rerr)
			continue
		}
		return write()
	}
	return err
}
