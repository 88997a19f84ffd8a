package server

import (
	"context"
	"fmt"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// SpaceSetter is the part of a cluster driver that changes the space this
// node announces (replicated.Driver.SetSpace): the leader then commits an
// epoch with it, and with automatic vnodes every node's count follows.
type SpaceSetter interface {
	Space() uint64
	SetSpace(space uint64)
}

// SpaceKeeper is the part of the store that keeps the node's space across
// restarts (store.Store.SetNodeSpace).
type SpaceKeeper interface {
	SetNodeSpace(space uint64) error
}

// reweightWait bounds how long REWEIGHT waits for the epochs of the
// nodes whose space changed.
const reweightWait = 10 * time.Second

// spaceVaried reports whether a node's space moved from old to measured
// by 1% of old or more (Sheepdog's node_size_varied; a node with no
// space before varies as soon as it has some).
func spaceVaried(old, measured uint64) bool {
	if old == 0 {
		return measured != 0
	}
	diff := float64(measured) - float64(old)
	if diff < 0 {
		diff = -diff
	}
	return diff/float64(old) >= 0.01
}

// reweight is REWEIGHT (dog's `cluster reweight`): every node of the
// current epoch weighs its store again (OpReweightPeer), and a node whose
// space changed by 1% or more announces it, which the leader commits as
// an epoch of its own (recovery then moves the objects). The reply waits,
// up to reweightWait, until the cluster's epochs carry every new space.
func (h *Handler) reweight(ctx context.Context, _ *call) error {
	var nodes []proto.Node
	h.cfg.Cluster.View(func(s *cluster.State) { nodes = s.Nodes() })
	spaces := make([]uint64, len(nodes))
	changed := make([]bool, len(nodes))
	err := fanout.Run(len(nodes), 0, func(i int) error {
		n := nodes[i]
		if n.Same(h.cfg.Self.NodeID) {
			var err error
			spaces[i], changed[i], err = h.reweighHere()
			return err
		}
		r := proto.NewRequest(proto.OpReweightPeer)
		rsp, _, err := h.cfg.Gateway.Peers().Call(ctx, n.NodeID.String(), &r, nil, nil)
		if err != nil {
			return fmt.Errorf("reweight node %s: %w", n.NodeID, err)
		}
		spaces[i], changed[i] = rsp.ReweightSpace(), rsp.ReweightChanged()
		return nil
	})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, reweightWait)
	defer cancel()
	for !h.epochHasSpaces(nodes, spaces, changed) {
		if err := h.waitNextEpoch(wctx); err != nil {
			h.cfg.Log.Warn("reweight: the new spaces are not in an epoch yet; the leader commits them when it can")
			return nil
		}
	}
	return nil
}

// waitNextEpoch returns once an epoch newer than the current one is
// applied, or with ctx's error. A driver that cannot notify is polled.
func (h *Handler) waitNextEpoch(ctx context.Context) error {
	if w, ok := h.cfg.Cluster.(cluster.EpochWaiter); ok {
		return w.WaitEpoch(ctx, h.epoch()+1)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

// epochHasSpaces reports whether the current epoch gives every changed
// node of nodes its new space (a node no longer in it has left: its
// change no longer matters).
func (h *Handler) epochHasSpaces(nodes []proto.Node, spaces []uint64, changed []bool) bool {
	ok := true
	h.cfg.Cluster.View(func(s *cluster.State) {
		cur := s.Nodes()
		for i, n := range nodes {
			if !changed[i] {
				continue
			}
			for _, c := range cur {
				if c.Same(n.NodeID) && c.Space != spaces[i] {
					ok = false
				}
			}
		}
	})
	return ok
}

// reweightPeer is OpReweightPeer: this node weighs its store again.
func (h *Handler) reweightPeer(_ context.Context, c *call) error {
	space, changed, err := h.reweighHere()
	if err != nil {
		return err
	}
	c.rsp.SetReweight(space, changed)
	return nil
}

// reweighHere measures this node's space as Sheepdog's md_get_size does
// (the bytes available plus the bytes its objects take) and, when it
// varied (spaceVaried), keeps and announces it. A gateway has no space
// and does not change.
func (h *Handler) reweighHere() (space uint64, changed bool, err error) {
	ss, ok := h.cfg.Cluster.(SpaceSetter)
	if !ok {
		return 0, false, proto.ResNoSupport
	}
	old := ss.Space()
	if h.cfg.Self.NrVnodes == 0 {
		return old, false, nil
	}
	_, free, err := h.cfg.Store.Capacity()
	if err != nil {
		return 0, false, err
	}
	used, err := h.cfg.Store.Used()
	if err != nil {
		return 0, false, err
	}
	measured := free + used
	if !spaceVaried(old, measured) {
		h.cfg.Log.Info("reweight: space unchanged", "space", old, "measured", measured)
		return old, false, nil
	}
	if k, ok := h.cfg.Store.(SpaceKeeper); ok {
		if err := k.SetNodeSpace(measured); err != nil {
			return 0, false, err
		}
	}
	ss.SetSpace(measured)
	h.cfg.Log.Info("reweight: space changed", "old", old, "new", measured)
	return measured, true, nil
}
