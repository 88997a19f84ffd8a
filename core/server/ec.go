package server

import (
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// peerKey is what a peer op on o addresses in this node's store, and its
// size: the object itself, or, for an object its VDI erasure-codes
// (docs/protocol.md §7), its strip o.ECIndex, a file of object_size/d bytes.
// The VDI's policy comes from the cluster state; a VDI this node has not
// heard of yet is taken at the policy the gateway sent with the request.
//
// Sheepdog's gateways put the copy's index in ec_index for replicas too, so
// ec_index alone does not make a strip.
func (h *Handler) peerKey(o proto.ObjArgs) (key uint64, size int64) {
	size = h.objectSize(o.Oid)
	if !proto.IsErasureOid(o.Oid) {
		return o.Oid, size
	}
	pol := erasure.Policy(o.CopyPolicy)
	h.cfg.Cluster.View(func(s *cluster.State) {
		if v := s.VdiState(proto.OidToVid(o.Oid)); v != nil {
			pol = erasure.Policy(v.CopyPolicy)
		}
	})
	if !pol.Erasure() || !pol.Valid() || int(o.ECIndex) >= pol.Total() {
		return o.Oid, size
	}
	return proto.StripKey(o.Oid, int(o.ECIndex)), pol.StoredSize(size)
}

// hasObject reports whether this node stores oid: the object, or for an
// erasure-coded one, any of its strips (sheep answers for the strip it
// holds, whichever index).
func (h *Handler) hasObject(oid uint64) bool {
	if h.cfg.Store.Exists(oid) {
		return true
	}
	if !proto.IsErasureOid(oid) {
		return false
	}
	var pol erasure.Policy
	h.cfg.Cluster.View(func(s *cluster.State) {
		if v := s.VdiState(proto.OidToVid(oid)); v != nil {
			pol = erasure.Policy(v.CopyPolicy)
		}
	})
	for i := range pol.Total() {
		if h.cfg.Store.Exists(proto.StripKey(oid, i)) {
			return true
		}
	}
	return false
}
