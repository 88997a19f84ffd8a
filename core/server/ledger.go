package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// decrefPeer is DECREF_PEER: apply a dropped reference to this node's copy
// of a ledger (gateway.ApplyDecref). A sender with room for one reply byte
// (our gateways: gateway.Decref) learns whether the copy became all zero,
// i.e. whether the data object has no reference left; Sheepdog's sender
// asks for none.
func (h *Handler) decrefPeer(ctx context.Context, c *call) error {
	ref := c.req.Ref()
	zero, err := gateway.ApplyDecref(ctx, h.cfg.Store, h.cfg.Locks, ref.Oid, ref.Generation, ref.Count, true)
	if err != nil {
		return err
	}
	if c.req.DataLength >= 1 {
		c.out = []byte{0}
		if zero {
			c.out[0] = 1
		}
	}
	return nil
}

// decrefObj is DECREF_OBJ (ref.oid a ledger): drop a reference to its data
// object, as a table write does (core/vdi).
func (h *Handler) decrefObj(ctx context.Context, c *call) error {
	ref := c.req.Ref()
	if !proto.IsLedgerObj(ref.Oid) || proto.IsVdiObj(ref.Oid) {
		return fmt.Errorf("decref %016x: not a ledger: %w", ref.Oid, proto.ResInvalidParms)
	}
	return h.cfg.Vdi.Decref(ctx, ref.Oid&^proto.LedgerBit, ref.Generation, ref.Count)
}
