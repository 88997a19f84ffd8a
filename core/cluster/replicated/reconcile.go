package replicated

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func (d *Driver) reconcileLoop() {
	defer d.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.kick:
		case <-t.C:
		}
		// Every node, not only the leader, ends its start-up join wait
		// once the last epoch's nodes are all live: a follower that
		// becomes leader later must not wait for a node that has left
		// since.
		d.WaitingForJoin()
		if d.rejoinIfLeftBehind() || d.adoptFormatted() {
			continue
		}
		if d.r().State() == raft.Leader {
			if err := d.reconcile(); err != nil {
				d.cfg.Log.Warn("membership reconcile", "err", err)
			}
			continue
		}
		d.autoRecover()
	}
}

// reconcile runs on the leader: it names a cluster that has no identity
// yet, makes raft's configuration follow the live members (Voters), and
// commits every membership change gossip reported as its own epoch, in
// the order they were noticed.
func (d *Driver) reconcile() error {
	if d.stopping.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var named bool
	d.View(func(s *cluster.State) { named = s.ClusterID != "" })
	if !named {
		// The name this node gossips already, if it bootstrapped the
		// cluster or joined one that had (Open).
		id := d.Identity().ClusterID
		if id == "" {
			id = newClusterID()
		}
		if _, err := d.Propose(ctx, &cluster.Entry{Kind: cluster.KindIdentity, ClusterID: id, Time: cluster.UnixNano(time.Now())}); err != nil {
			return fmt.Errorf("name the cluster: %w", err)
		}
	}
	if err := d.reconfigure(); err != nil {
		return err
	}
	if d.WaitingForJoin() {
		return nil // no epoch change until the last epoch's nodes are back (or force)
	}
	d.epochMu.Lock()
	defer d.epochMu.Unlock()
	for {
		e, change, ok := d.nextEpoch(false)
		if !ok {
			return nil
		}
		res, err := d.Propose(ctx, e)
		if err != nil {
			return err
		}
		switch res {
		case proto.ResSuccess:
			d.logEpoch(change, false)
		case proto.ResOldNodeVer: // another epoch came first: look again
		default:
			return fmt.Errorf("epoch entry: %w", res)
		}
	}
}

// reconfigure applies the voter policy to raft's configuration.
func (d *Driver) reconfigure() error {
	r := d.r()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	servers := cf.Configuration().Servers
	for _, a := range Voters(servers, d.liveServers(servers), raft.ServerID(d.cfg.Self.NodeID.String()), d.cfg.MaxVoters) {
		var f raft.IndexFuture
		switch a.Op {
		case OpRemove:
			f = r.RemoveServer(a.ID, 0, 5*time.Second)
		case OpAddVoter:
			f = r.AddVoter(a.ID, a.Addr, 0, 5*time.Second)
		case OpAddNonvoter:
			f = r.AddNonvoter(a.ID, a.Addr, 0, 5*time.Second)
		case OpDemote:
			f = r.DemoteVoter(a.ID, 0, 5*time.Second)
		}
		if err := f.Error(); err != nil {
			return fmt.Errorf("raft configuration (op %d on %s): %w", a.Op, a.ID, err)
		}
	}
	return nil
}

// nextEpoch builds the entry of the next membership change, if any: one
// change only (cluster.PendingChanges), so that changes noticed together
// still get an epoch each, except for the first epoch after a
// whole-cluster restart, which takes in every node (NextMembers). With
// forced and no change, the entry repeats the current node list (the
// epoch then only records the re-forming).
func (d *Driver) nextEpoch(forced bool) (*cluster.Entry, string, bool) {
	var formatted, auto bool
	var cur []proto.Node
	var base uint32
	d.View(func(s *cluster.State) {
		formatted, cur, auto, base = s.Formatted(), s.Nodes(), s.Flags&proto.ClusterFlagAutoVnodes != 0, s.Epoch()
	})
	if !formatted {
		return nil, "", false
	}
	live := d.Members()
	if forced {
		live = d.liveNotDead(live)
	} else {
		// A held peer keeps its place in the epochs; it never joins
		// them (a killed node is held until its first ping times out,
		// after an epoch forced without it).
		for _, m := range d.held() {
			if slices.ContainsFunc(cur, func(n proto.Node) bool { return n.Same(m.Node.NodeID) }) {
				live = append(live, m.Node)
			}
		}
	}
	changes := cluster.PendingChanges(cur, live, d.noticedSeq)
	if n, ok := vnodeChange(cur, live); ok && len(changes) == 0 && !auto {
		c := cluster.Change{Node: n, Join: true} // Apply replaces the node
		return cluster.NewEpoch(base, c.Apply(cur), auto, forced, time.Now()), "vnodes of " + n.NodeID.String() + " set", true
	}
	if n, ok := spaceChange(cur, live); ok && len(changes) == 0 {
		c := cluster.Change{Node: n, Join: true} // Apply replaces the node
		return cluster.NewEpoch(base, c.Apply(cur), auto, forced, time.Now()), "space of " + n.NodeID.String() + " reweighted", true
	}
	if len(changes) == 0 {
		if !forced {
			return nil, "", false
		}
		return cluster.NewEpoch(base, cur, auto, true, time.Now()), "none", true
	}
	nodes, n := NextMembers(cur, changes, !forced && d.gathered.Load())
	var what []string
	for _, c := range changes[:n] {
		if c.Join {
			what = append(what, "joined "+c.Node.NodeID.String())
		} else {
			what = append(what, "left "+c.Node.NodeID.String())
		}
	}
	return cluster.NewEpoch(base, nodes, auto, forced, time.Now()), strings.Join(what, ", "), true
}

// liveNotDead is live, the members as gossip sees them, less those
// Config.Dead knows are gone (-c local: a sheep whose process ended), for
// a forced epoch. Gossip takes a few seconds to agree when no other node
// can confirm the suspicion (two nodes), and the epoch a survivor forces
// meanwhile (autoRecover) must not keep the dead node only to drop it one
// epoch later. Other epochs follow gossip alone, in the order it noticed
// the changes (a node leaving on a disk error before another is killed
// keeps its epoch first, as Sheepdog's suite expects).
func (d *Driver) liveNotDead(live []proto.Node) []proto.Node {
	if d.cfg.Dead == nil {
		return live
	}
	self := d.cfg.Self.NodeID
	return slices.DeleteFunc(live, func(n proto.Node) bool { return !n.Same(self) && d.cfg.Dead(n.NodeID.String()) })
}

func (d *Driver) logEpoch(change string, forced bool) {
	var epoch uint32
	var n int
	d.View(func(s *cluster.State) { epoch, n = s.Epoch(), len(s.Nodes()) })
	if forced {
		d.cfg.Log.Warn("new epoch, forced by cluster recover force", "epoch", epoch, "change", change, "nodes", n)
		return
	}
	d.cfg.Log.Info("new epoch", "epoch", epoch, "change", change, "nodes", n)
}

// rejoinIfLeftBehind runs on a node without a leader (RejoinNewer says
// when else): when live peers of its cluster are of a newer generation
// (they re-formed the cluster with recover force while this node could not
// reach a majority), its log is of the old cluster and can never be
// committed to again: it drops the log and rejoins as a fresh member. A
// node with a leader is a member of the cluster that leader leads, however
// late its state, and stays. It reports whether it dropped the log.
func (d *Driver) rejoinIfLeftBehind() bool {
	if d.r().LastIndex() == 0 {
		return false
	}
	leaderless := d.leaderlessFor() >= d.cfg.NoLeaderWait
	if !RejoinNewer(leaderless, d.cfg.Dead != nil, d.WaitingForJoin()) {
		return false
	}
	gen, peer := d.newerGeneration()
	if peer == "" {
		return false
	}
	d.cfg.Log.Warn("the cluster was re-formed without this node (recover force): dropping its raft log to rejoin",
		"our_generation", d.Identity().Generation, "their_generation", gen, "peer", peer)
	d.raftMu.Lock()
	defer d.raftMu.Unlock()
	if err := d.r().Shutdown().Error(); err != nil {
		d.cfg.Log.Error("stop raft to rejoin", "err", err)
	}
	if err := d.dropLog(); err != nil {
		d.cfg.Log.Error("rejoin: drop the raft log", "err", err)
		return true
	}
	if err := d.startRaft(false); err != nil {
		d.cfg.Log.Error("rejoin: restart raft", "err", err)
	}
	return true
}

// adoption is a formatted cluster met by a node of an unformatted one.
type adoption struct {
	id         Identity
	peer, addr string // the peer's name and gossip address
}

// adoptFormatted runs where dead sheeps are known (-c local): a node of a
// cluster that was never formatted, which met a node of a formatted one
// (gossip refused it: another cluster id), drops its raft log, takes that
// cluster's identity and joins it through that node, as a new member. Its
// cluster holds nothing to lose; Sheepdog's new nodes likewise wait and
// take in the formatted cluster's nodes when they come back (its
// functional test 070), where two raft clusters would stay apart. It
// reports whether it did.
func (d *Driver) adoptFormatted() bool {
	d.noticeMu.Lock()
	a := d.adopt
	d.adopt = nil
	d.noticeMu.Unlock()
	if a == nil || d.cfg.Dead == nil || !Adopt(d.Identity(), a.id) {
		return false
	}
	d.cfg.Log.Warn("this node's cluster was never formatted: joining the formatted cluster of a peer", "peer", a.peer, "cluster_id", a.id.ClusterID)
	d.raftMu.Lock()
	if err := d.r().Shutdown().Error(); err != nil {
		d.cfg.Log.Error("stop raft to join a formatted cluster", "err", err)
	}
	err := d.dropLog()
	if err == nil {
		d.setIdentity(a.id)
		err = d.startRaft(false)
	}
	d.raftMu.Unlock()
	if err != nil {
		d.cfg.Log.Error("join a formatted cluster", "err", err)
		return true
	}
	// Gossip refused the peer: meet it again, now as one cluster.
	go d.ml.Join([]string{a.addr})
	return true
}

// autoRecover runs on a node without a leader where dead sheeps are
// known as such (Config.Dead): when every voter missing from a majority
// is dead and this node is the survivor AutoRecover names, it re-forms the
// cluster as `cluster recover force` does. Not during the wait of a
// restart (WaitingForJoin): a node restarted alone must wait for the
// nodes of its last epoch, whose state may be newer than its own, as
// Sheepdog's do.
func (d *Driver) autoRecover() {
	if d.cfg.Dead == nil || d.stopping.Load() || d.leaderlessFor() < d.cfg.NoLeaderWait || d.WaitingForJoin() {
		return
	}
	formatted := false
	d.View(func(s *cluster.State) { formatted = s.Formatted() })
	if !formatted {
		return // nothing to keep: a new format bootstraps again
	}
	cf := d.r().GetConfiguration()
	if cf.Error() != nil {
		return
	}
	servers := cf.Configuration().Servers
	live, dead := map[raft.ServerID]bool{}, map[raft.ServerID]bool{}
	for _, n := range d.Members() {
		live[raft.ServerID(n.NodeID.String())] = true
	}
	var gone []string
	for _, s := range servers {
		if s.ID != raft.ServerID(d.cfg.Self.NodeID.String()) && d.cfg.Dead(string(s.ID)) {
			dead[s.ID] = true
			gone = append(gone, string(s.ID))
		}
	}
	if !AutoRecover(servers, live, dead, raft.ServerID(d.cfg.Self.NodeID.String())) {
		return
	}
	d.cfg.Log.Warn("no raft majority and every missing voter is dead: re-forming the cluster from this node", "dead", gone)
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ProposeTimeout)
	defer cancel()
	if _, err := d.ForceRecover(ctx); err != nil {
		d.cfg.Log.Error("re-forming the cluster after its voters died", "err", err)
	}
}

// ForceRecover implements cluster.Membership (`cluster recover force`):
// it commits an epoch marked forced with the next membership change. With
// a leader this only ends the wait for the last epoch's nodes after a
// whole-cluster restart. Without one (no majority of voters alive) it
// first re-forms raft with this node as the only voter (raft's
// RecoverCluster); the other survivors see the new generation and rejoin
// (rejoinIfLeftBehind), and the leader adds them back as usual. It
// returns the node list of the epoch before.
func (d *Driver) ForceRecover(ctx context.Context) ([]proto.Node, error) {
	var last []proto.Node
	var formatted bool
	d.View(func(s *cluster.State) { last, formatted = s.Nodes(), s.Formatted() })
	if !formatted {
		return nil, proto.ResWaitForFormat
	}
	// Held until the forced epoch is in: the new leader's reconcile must
	// not commit the pending changes before it.
	d.epochMu.Lock()
	defer d.epochMu.Unlock()
	for d.leaderlessFor() > 0 && d.leaderlessFor() < d.cfg.NoLeaderWait {
		if err := d.waitLeaderChange(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if !d.Quorum() {
		if err := d.recoverAlone(); err != nil {
			return nil, fmt.Errorf("re-form the cluster: %w", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.WaitQuorum(wctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("no leader after re-forming the cluster: %w", proto.ResClusterError)
		}
	}
	d.endJoinWait()
	for {
		e, change, _ := d.nextEpoch(true)
		res, err := d.Propose(ctx, e)
		if err != nil {
			return nil, err
		}
		if res == proto.ResOldNodeVer {
			continue // an epoch committed meanwhile: force on top of it
		}
		if res != proto.ResSuccess {
			return nil, res
		}
		d.logEpoch(change, true)
		break
	}
	d.poke() // the remaining changes, one epoch each
	return last, nil
}

// recoverAlone stops raft and restarts it as the only voter of its
// cluster, over the log it holds (raft.RecoverCluster).
func (d *Driver) recoverAlone() error {
	d.raftMu.Lock()
	defer d.raftMu.Unlock()
	if err := d.r().Shutdown().Error(); err != nil {
		return err
	}
	trans, err := d.newTransport()
	if err != nil {
		return err
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(d.cfg.Self.NodeID.String()), Address: trans.LocalAddr()}}}
	err = raft.RecoverCluster(d.raftConfig(), newFSM(), d.wal, d.wal, d.snaps, trans, conf)
	trans.Close()
	if err != nil {
		return err
	}
	d.cfg.Log.Warn("raft re-formed with this node as its only voter (cluster recover force)")
	return d.startRaft(false)
}
