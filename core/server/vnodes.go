package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// VnodeSetter is the part of a cluster driver that changes the vnode
// count this node announces (replicated.Driver.SetVnodes).
type VnodeSetter interface {
	SetVnodes(n uint16)
}

// setVnodes is SET_VNODES (dog's `node vnodes set N`): the payload is a
// little-endian int32 (dog sends 8 bytes, the rest unused). As Sheepdog's
// local_set_vnodes: refused on a gateway (GATEWAY_MODE), in a cluster with
// automatic vnodes (INVALID_VNODES_STRATEGY; before format, a sheep
// started without -V), and for a count outside 1..65535 (INVALID_PARMS).
func (h *Handler) setVnodes(_ context.Context, c *call) error {
	vs, ok := h.cfg.Cluster.(VnodeSetter)
	if !ok {
		return proto.ResNoSupport
	}
	if h.cfg.Self.NrVnodes == 0 {
		h.cfg.Log.Error("failed to set vnodes, cause operating in gateway mode.")
		return proto.ResGatewayMode
	}
	var auto bool
	h.cfg.Cluster.View(func(s *cluster.State) {
		auto = s.Flags&proto.ClusterFlagAutoVnodes != 0 || (!s.Formatted() && !h.cfg.FixedVnodes)
	})
	if auto {
		h.cfg.Log.Error("failed to set vnodes, cause operating in auto vnodes strategy.")
		return proto.ResInvalidVnodesStrategy
	}
	if len(c.data) < 4 {
		return fmt.Errorf("vnodes of %d bytes: %w", len(c.data), proto.ResInvalidParms)
	}
	n := int32(le.Uint32(c.data))
	if n < 1 || n > 65535 {
		h.cfg.Log.Error("invalid vnodes", "vnodes", n)
		return fmt.Errorf("vnodes %d: %w", n, proto.ResInvalidParms)
	}
	vs.SetVnodes(uint16(n))
	h.cfg.Log.Info("vnodes set", "vnodes", n)
	return nil
}
