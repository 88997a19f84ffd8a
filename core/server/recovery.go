package server

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
)

// recoveryThrottlingSize is struct recovery_throttling: u32
// max_exec_count, u64 queue_work_interval (ms) @8, bool throttling @16.
const recoveryThrottlingSize = 24

func (h *Handler) getRecovery(_ context.Context, c *call) error {
	if h.cfg.Recovery == nil {
		return proto.ResNoSupport
	}
	t := h.cfg.Recovery.GetThrottle()
	out := make([]byte, recoveryThrottlingSize)
	le.PutUint32(out[0:], t.Max)
	ms := uint64(t.Interval / time.Millisecond)
	if t.Interval == math.MaxInt64 {
		ms = max(ms, h.throttleMs.Load()) // as set, beyond what a Duration holds
	}
	le.PutUint64(out[8:], ms)
	if t.Max > 0 && t.Interval > 0 {
		out[16] = 1
	}
	c.out = out
	return nil
}

func (h *Handler) setRecoveryThrottle(_ context.Context, c *call) error {
	if h.cfg.Recovery == nil {
		return proto.ResNoSupport
	}
	if len(c.data) < 16 {
		return fmt.Errorf("recovery throttling of %d bytes: %w", len(c.data), proto.ResInvalidParms)
	}
	max, ms := le.Uint32(c.data[0:]), le.Uint64(c.data[8:])
	interval := time.Duration(math.MaxInt64) // ~292 years: what ms beyond it mean too
	if ms <= math.MaxInt64/uint64(time.Millisecond) {
		interval = time.Duration(ms) * time.Millisecond
	}
	h.cfg.Recovery.SetThrottle(recovery.Throttle{Max: max, Interval: interval})
	h.throttleMs.Store(ms)
	h.cfg.Log.Info("recovery throttle set", "max", max, "interval", interval)
	return nil
}

// forceRecover is `cluster recover force`: a new epoch marked forced with
// the nodes present now, ending the wait for the missing nodes of the last
// epoch after a whole-cluster restart, or re-forming the cluster from the
// survivors when too few remain for a quorum (cluster.Membership). It
// answers with the node list of the last epoch.
func (h *Handler) forceRecover(ctx context.Context, c *call) error {
	var last []proto.Node
	if m, ok := h.cfg.Cluster.(cluster.Membership); ok {
		var err error
		if last, err = m.ForceRecover(ctx); err != nil {
			return err
		}
	} else {
		var formatted, auto bool
		h.cfg.Cluster.View(func(s *cluster.State) {
			last, formatted, auto = s.Nodes(), s.Formatted(), s.Flags&proto.ClusterFlagAutoVnodes != 0
		})
		if !formatted {
			return proto.ResWaitForFormat
		}
		res, err := h.cfg.Cluster.Propose(ctx, cluster.NewEpoch(0, h.members(), auto, true, h.cfg.Now()))
		if err != nil {
			return err
		}
		if res != proto.ResSuccess {
			return res
		}
	}
	if uint32(len(last)*proto.NodeSize) <= c.req.DataLength {
		c.out = proto.MarshalNodes(last)
	}
	return nil
}
