package gateway

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// PunchObject makes [off, off+n) of the existing object oid read as zeros
// on every copy, punching a hole where the copy's filesystem can (the
// range then takes no space) and writing zeros where it cannot. It is on
// stable storage on all copies when it returns, or, with
// proto.FlagCmdCache in flags, after the next Flush, as for WriteObject.
//
// The range is dropped from oid itself: the caller must own oid, never
// punch an object a snapshot or clone shares (core/volume punches only
// objects of the VDI's own vid; a shared one is copied on write instead).
func (g *Gateway) PunchObject(ctx context.Context, oid uint64, off, n int64, flags uint16) error {
	if n < 0 {
		return fmt.Errorf("punch %016x: negative length %d: %w", oid, n, proto.ResInvalidParms)
	}
	if g.ecPolicy(ctx, oid).Erasure() {
		return g.ecPunch(ctx, oid, off, n, flags)
	}
	return g.changeRange(ctx, oid, off, n, flags, func(p plan, t proto.Node, synced bool) error {
		if g.isSelf(t) {
			return g.localChange(ctx, oid, func() error { return g.store.Punch(ctx, oid, off, n, synced) })
		}
		return g.peerPunch(ctx, t, p.epoch, oid, off, n, synced)
	})
}

// peerPunch sends PUNCH_PEER to n. A node that does not know the opcode
// (an older version: INVALID_PARMS, or NO_SUPPORT) gets the zeros written
// instead; the range reads the same, only the space is not freed there.
func (g *Gateway) peerPunch(ctx context.Context, n proto.Node, epoch uint32, oid uint64, off, length int64, sync bool) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(length))
	err := g.peerWrite(ctx, n, epoch, proto.OpPunchPeer, oid, off, b[:], sync)
	if r := proto.ResultOf(err); r != proto.ResInvalidParms && r != proto.ResNoSupport {
		return err
	}
	g.log.Debug("peer cannot punch; writing zeros", "node", n.NodeID.String(), "oid", fmt.Sprintf("%016x", oid), "err", err)
	return g.peerWrite(ctx, n, epoch, proto.OpWritePeer, oid, off, make([]byte, length), sync)
}
