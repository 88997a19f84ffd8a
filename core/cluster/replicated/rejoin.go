package replicated

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Healing a partition. memberlist never probes a node it has declared
// dead, and forgets it 30 s later (GossipToTheDeadTime): once a network
// partition heals, the two sides would stay apart for good, each one's
// raft and epochs going on without the other (the cut-off side as a
// zombie that answers but can order nothing). So every node keeps trying
// to reach the nodes of its recent epochs that gossip does not see
// (reconnectLoop); the first join that gets through merges the two
// gossip pools again, the leader sees the returning node alive and
// commits its epoch (reconcile), and raft brings the node's log up to
// date. Its copies are then set aside by recovery, as any returning
// node's: it was absent from an epoch (core/recovery's plan).
//
// Until the node is in the current epoch again it is Outside: its state
// says the cluster went on without it, and its clients get WAIT_FOR_JOIN
// (core/server) instead of answers from a membership that is gone.

// reconnectEpochs is how many of the latest epochs name the nodes a node
// keeps trying to reach: those the cluster lost lately, not every node
// that ever left.
const reconnectEpochs = 4

// reconnectLoop tries, every ReconnectInterval, to join gossip through
// every lost node (lostPeers), at most one attempt per node at a time (an
// attempt at a silent address waits for memberlist's TCP timeout).
func (d *Driver) reconnectLoop() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.ReconnectInterval)
	defer t.Stop()
	var mu sync.Mutex
	trying := map[string]bool{}
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		if d.stopping.Load() {
			continue
		}
		d.warnSplitBrain()
		for _, addr := range d.lostPeers() {
			mu.Lock()
			busy := trying[addr]
			trying[addr] = true
			mu.Unlock()
			if busy {
				continue
			}
			// Not waited for by Close: an attempt at a silent address can
			// take memberlist's TCP timeout (10 s), and a stopping sheep
			// must not wait on it (the Join then fails on its own).
			go func() {
				if n, err := d.ml.Join([]string{addr}); err == nil && n > 0 {
					d.cfg.Log.Info("gossip: reached a lost node again", "gossip_addr", addr)
				}
				mu.Lock()
				delete(trying, addr)
				mu.Unlock()
			}()
		}
	}
}

// warnSplitBrain logs, at most every 30 s, a healed partition whose other
// side was re-formed with `cluster recover force` while this side kept a
// leader: two histories of one cluster. Nothing merges them automatically
// (the forced side's acknowledged writes exist nowhere else); the
// operator has to pick one.
func (d *Driver) warnSplitBrain() {
	if !d.Quorum() {
		return // a node without a leader rejoins the newer generation (rejoinIfLeftBehind)
	}
	gen, peer := d.newerGeneration()
	if peer == "" || time.Since(d.splitWarned) < 30*time.Second {
		return
	}
	d.splitWarned = time.Now()
	d.cfg.Log.Error("split brain: a node of this cluster was re-formed with recover force while this side had a leader",
		"peer", peer, "their_generation", gen, "our_generation", d.Identity().Generation)
}

// lostPeers returns the gossip addresses of the nodes of the latest
// reconnectEpochs epochs that gossip does not see alive now, this node
// left out.
func (d *Driver) lostPeers() []string {
	var recent []proto.Node
	d.View(func(s *cluster.State) {
		for e := s.Epoch(); e >= 1 && s.Epoch()-e < reconnectEpochs; e-- {
			recent = append(recent, s.EpochNodes(e)...)
		}
	})
	live := map[string]bool{d.cfg.Self.NodeID.String(): true}
	for _, n := range d.Members() {
		live[n.NodeID.String()] = true
	}
	var out []string
	for _, n := range recent {
		name := n.NodeID.String()
		if live[name] {
			continue
		}
		live[name] = true // once
		d.noticeMu.Lock()
		addr := d.gossipAddr[name]
		d.noticeMu.Unlock()
		if addr == "" {
			if a := gossipAddrs([]string{name}); len(a) == 1 {
				addr = a[0]
			}
		}
		if addr != "" {
			out = append(out, addr)
		}
	}
	return out
}

// Outside implements cluster.Membership: the cluster is formatted and its
// current epoch, as this node has applied it, leaves this node out. It
// was declared dead (cut off, then healed: the epochs that removed it
// came in with the log) and waits for the epoch that takes it back; or it
// is a new node whose join epoch it has not applied yet.
func (d *Driver) Outside() bool {
	out := false
	d.View(func(s *cluster.State) { out = d.outsideOf(s) })
	return out
}

func (d *Driver) outsideOf(s *cluster.State) bool {
	return s.Formatted() && !slices.ContainsFunc(s.Nodes(), func(n proto.Node) bool { return n.Same(d.cfg.Self.NodeID) })
}

// WaitMember implements cluster.Membership: it returns once this node is
// not Outside, or when ctx ends.
func (d *Driver) WaitMember(ctx context.Context) error {
	return d.fsm.wait(ctx, func() bool { return !d.outsideOf(d.fsm.st) })
}

// peersChanged tells OnPeer how an applied epoch changed the members:
// nodes it removed are down (requests waiting on them are failed over
// now, even where gossip still sees them), nodes it added are up.
func (d *Driver) peersChanged(e *cluster.Entry) {
	if d.cfg.OnPeer == nil {
		return
	}
	var prev []proto.Node
	d.View(func(s *cluster.State) { prev = s.EpochNodes(s.Epoch() - 1) })
	in := func(nodes []proto.Node, n proto.Node) bool {
		return slices.ContainsFunc(nodes, func(m proto.Node) bool { return m.Same(n.NodeID) })
	}
	for _, n := range prev {
		if !in(e.Nodes, n) && !n.Same(d.cfg.Self.NodeID) {
			d.cfg.OnPeer(n.NodeID.String(), false)
		}
	}
	for _, n := range e.Nodes {
		if !in(prev, n) && !n.Same(d.cfg.Self.NodeID) {
			d.cfg.OnPeer(n.NodeID.String(), true)
		}
	}
}
