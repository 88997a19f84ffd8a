package server

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// repairReplica is REPAIR_REPLICA (0xC5), sent by dog's and collie's
// `vdi check` to a node whose copy is bad or missing, and by gateways to a
// peer whose copy failed a read: read the object from the node named in
// forw (READ_PEER with our epoch) and repair this node's copy with it,
// holding the object's lock so that no write interleaves (the read itself
// runs without it).
//
// A copy that fails the store's checksums gets only its bad chunks
// rewritten (store.Repair); a missing copy is created if the current epoch
// places one here; a copy that verifies but differs from the good one (it
// missed a write) is replaced whole, as sheep does. With our flag
// proto.FlagRepairBadChunks only the bad chunks are rewritten.
func (h *Handler) repairReplica(ctx context.Context, c *call) error {
	f := c.req.Forw()
	from := f.Node()
	if from.Same(h.cfg.Self.NodeID) {
		return fmt.Errorf("repair %016x from this node itself: %w", f.Oid, proto.ResInvalidParms)
	}
	size := h.objectSize(f.Oid)
	good := make([]byte, size)
	// The good copy is read without the object's lock, which is then
	// taken with the read still valid (store.Locks.LockAfter).
	err := h.cfg.Locks.LockAfter(f.Oid, func() error {
		r := proto.NewRequest(proto.OpReadPeer)
		r.Epoch = h.epoch()
		r.SetObj(proto.ObjArgs{Oid: f.Oid})
		_, n, err := h.cfg.Gateway.Peers().Call(ctx, from.String(), &r, nil, good)
		if err != nil {
			return fmt.Errorf("repair %016x: read from %s: %w", f.Oid, from, err)
		}
		if int64(n) != size {
			return fmt.Errorf("repair %016x: %d bytes from %s, want %d: %w", f.Oid, n, from, size, proto.ResEIO)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer h.cfg.Locks.Unlock(f.Oid)
	chunks, err := h.cfg.Store.Repair(ctx, f.Oid, good)
	if c.req.Flags&proto.FlagRepairBadChunks != 0 {
		return err
	}
	switch {
	case errors.Is(err, proto.ResNoObj):
		if !h.cfg.Gateway.Holds(ctx, f.Oid) {
			return err // not placed here: a copy here would only go stale
		}
		h.cfg.Log.Warn("repair: created missing copy", "oid", fmt.Sprintf("%016x", f.Oid), "from", from.String())
		return h.cfg.Store.Create(ctx, f.Oid, size, 0, good, true)
	case err != nil:
		return err
	case chunks > 0:
		return nil
	}
	mine, err := h.cfg.Store.SHA1(f.Oid)
	if err != nil {
		return err
	}
	if want := sha1.Sum(good); bytes.Equal(mine[:], want[:]) {
		return nil
	}
	h.cfg.Log.Warn("repair: replacing outdated copy", "oid", fmt.Sprintf("%016x", f.Oid), "from", from.String())
	return h.cfg.Store.Create(ctx, f.Oid, size, 0, good, true)
}
