package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// punchPeer is PUNCH_PEER (proto.OpPunchPeer): make [offset, offset+length)
// of this node's copy of obj.oid read as zeros, the length being the
// 8-byte little-endian payload. Like writePeer it holds the object's lock,
// so that it is ordered with recovery and repairs of the same object.
func (h *Handler) punchPeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	if len(c.data) != 8 {
		return fmt.Errorf("punch %016x: payload of %d bytes, want 8: %w", o.Oid, len(c.data), proto.ResInvalidParms)
	}
	off, n := int64(o.Offset), int64(le.Uint64(c.data))
	key, size := h.peerKey(o)
	if n < 0 || off+n > size {
		return fmt.Errorf("punch %s: [%d,+%d) outside %d: %w", proto.ObjectName(key), off, n, size, proto.ResInvalidParms)
	}
	h.cfg.Locks.RLock(key)
	defer h.cfg.Locks.RUnlock(key)
	return h.cfg.Store.Punch(ctx, key, off, n, peerSync(c))
}
