package replicated

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/segment"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/cluster/replicated/walmeta"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Driver orders entries through hashicorp/raft and tracks membership with
// hashicorp/memberlist. It implements cluster.Driver, cluster.Membership
// and cluster.EpochWaiter.
type Driver struct {
	cfg     Config
	fsm     *fsm
	ml      *memberlist.Memberlist
	raftLog *libLog
	mlLog   *libLog

	// raftMu serialises replacing the raft instance (ForceRecover,
	// rejoin); raft is read without it and may be one that was just shut
	// down, whose calls fail with raft.ErrRaftShutdown (retried).
	raftMu  sync.Mutex
	raft    atomic.Pointer[raft.Raft]
	wal     *wal.WAL
	walMeta *walmeta.Store
	snaps   *raft.FileSnapshotStore
	obs     chan raft.Observation

	hasState bool // raft had a log when this sheep started
	started  time.Time
	rejoined atomic.Bool // the raft log was dropped to rejoin a re-formed cluster
	// startLast is the last index of the raft log when this node started
	// (CaughtUp); caughtUp latches once the state holds it.
	startLast uint64
	caughtUp  atomic.Bool

	// ident is what this node gossips about its cluster; persisted in
	// Dir/raft/identity.json so a restarted node carries it before its
	// log is replayed.
	ident atomic.Pointer[Identity]
	// vnodes is SetVnodes' count + 1 (0: cfg.Self's own).
	vnodes atomic.Uint32
	// space is SetSpace's space (nil: cfg.Self's own).
	space atomic.Pointer[uint64]

	// waitMu guards joinWait: set at start-up of a node that belongs to a
	// cluster, cleared for good once every node of the last epoch is back
	// or a new epoch is committed after the start (a force-recover, or the
	// leader seeing a membership change).
	waitMu   sync.Mutex
	joinWait bool
	// gathered is set when this restarted node's join wait ended because
	// every node of the last epoch is back, and cleared once an epoch
	// committed after the start is applied: until then the leader takes
	// every pending change into one epoch (NextMembers), as Sheepdog's
	// cluster does when it leaves its wait.
	gathered atomic.Bool

	// leaderMu guards the leader notification: leaderCh is closed and
	// replaced when raft reports a leader change; leaderless is when the
	// leader was last lost (zero while there is one).
	leaderMu   sync.Mutex
	leaderCh   chan struct{}
	leaderless time.Time

	// epochMu serialises proposing epochs (reconcile, ForceRecover).
	epochMu sync.Mutex

	// noticeMu guards noticed: per node name, the sequence number of the
	// last join or leave gossip reported, to commit changes in order; and
	// members, the decoded metadata of the live peers.
	noticeMu sync.Mutex
	noticed  map[string]int64
	members  map[string]meta
	seq      int64
	refused  map[string]time.Time // peers refused, for rate-limited logging
	// left holds the peers gossip reported gone less than leaveGrace ago,
	// while this node checks them itself (checkLeft).
	left map[string]*leftPeer
	// gossipAddr is the gossip address each peer was last seen at, to
	// reach it again after a partition (reconnectLoop).
	gossipAddr map[string]string
	// adopt is a formatted peer this node of an unformatted cluster
	// refused (-c local): adoptFormatted joins its cluster.
	adopt *adoption
	// splitWarned is when warnSplitBrain last logged (reconnectLoop only).
	splitWarned time.Time

	stopping  atomic.Bool // a cluster shutdown was applied
	kick      chan struct{}
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (d *Driver) r() *raft.Raft { return d.raft.Load() }

func (d *Driver) raftDir() string { return filepath.Join(d.cfg.Dir, "raft") }

// Open starts memberlist and raft for this node. A node with no raft
// state and no peers to join bootstraps a one-node cluster; a node told to
// join never does. A restarted node first looks at its peers: if they
// re-formed the cluster without it (a newer generation), it drops its raft
// log and rejoins as a fresh member.
func Open(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster driver config: %w", err)
	}
	d := &Driver{cfg: cfg, kick: make(chan struct{}, 1), stop: make(chan struct{}), noticed: map[string]int64{}, members: map[string]meta{},
		refused: map[string]time.Time{}, gossipAddr: map[string]string{}, left: map[string]*leftPeer{}, leaderCh: make(chan struct{}), obs: make(chan raft.Observation, 16)}
	d.raftLog = newLibLog(cfg.Log, "raft", cfg.LogRate)
	d.mlLog = newLibLog(cfg.Log, "memberlist", cfg.LogRate)
	d.fsm = newFSM()
	d.fsm.onApply = d.applied
	d.fsm.onRestore = func() {
		d.syncIdentity()
		if cfg.OnRestore != nil {
			cfg.OnRestore()
		}
	}
	d.started = time.Now()
	d.leaderless = d.started
	ident := loadIdentity(d.raftDir())
	d.ident.Store(&ident)

	if err := d.openLog(); err != nil {
		return nil, err
	}
	hasState, err := raft.HasExistingState(d.wal, d.wal, d.snaps)
	if err != nil {
		d.closeLog()
		return nil, err
	}
	d.hasState = hasState
	// A node that bootstraps a cluster names it now, before it gossips:
	// a node that knows no identity conflicts with nobody, and another
	// cluster whose gossip reached it in the moments before its leader
	// named the cluster would take it in (Identity.Conflicts). The leader
	// proposes this name (reconcile).
	if !hasState && len(cfg.Join) == 0 && ident.ClusterID == "" {
		ident.ClusterID = newClusterID()
		d.setIdentity(ident)
	}
	// A new node waits too once it learns its cluster waits for the
	// nodes of the last epoch (WaitingForJoin), as Sheepdog's does.
	d.joinWait = true

	if err := d.startGossip(); err != nil {
		d.closeLog()
		return nil, err
	}
	peers := gossipAddrs(cfg.Join)
	if len(cfg.GossipSeeds) > 0 {
		peers = cfg.GossipSeeds
	}
	if len(peers) == 0 && hasState && cfg.Dead == nil {
		// A restarted node finds its cluster through the raft
		// configuration it stored. (With -c local, whose registry
		// names every live sheep, none is live: the next to start
		// joins this one.)
		peers = gossipAddrs(d.storedPeers())
	}
	if len(peers) > 0 {
		var err error
		for deadline := time.Now().Add(cfg.JoinRetry); ; {
			if _, err = d.ml.Join(peers); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond) // the peers may be starting too: retry backoff
		}
		if err != nil && len(cfg.Join) > 0 {
			d.ml.Shutdown()
			d.closeLog()
			return nil, fmt.Errorf("join %v: %w", cfg.Join, err)
		}
		if !hasState && d.Identity() == (Identity{}) {
			d.adoptJoined(peers)
		}
	}
	if hasState {
		if gen, peer := d.newerGeneration(); peer != "" {
			cfg.Log.Warn("the cluster was re-formed without this node (recover force): dropping its raft log to rejoin",
				"our_generation", d.ident.Load().Generation, "their_generation", gen, "peer", peer)
			if err := d.dropLog(); err != nil {
				d.ml.Shutdown()
				return nil, err
			}
		}
	}
	if cfg.Dead != nil && hasState && !d.rejoined.Load() {
		d.waitOlderYield()
	}
	bootstrap := !hasState && len(cfg.Join) == 0
	if d.startLast, err = d.wal.LastIndex(); err != nil {
		d.ml.Shutdown()
		d.closeLog()
		return nil, fmt.Errorf("raft log: %w", err)
	}
	if err := d.startRaft(bootstrap); err != nil {
		d.ml.Shutdown()
		d.closeLog()
		return nil, err
	}
	d.wg.Add(3)
	go d.watchLeader()
	go d.reconcileLoop()
	go d.reconnectLoop()
	return d, nil
}

// walSegmentSize is the size of a raft log segment file, allocated in full
// when the segment starts (prefixFS.Create, with some slack), and of the
// reserve beside the log (logReserve) that makes room for the next segment on a full store:
// room for the cluster's entries that a full store filesystem cannot take
// away. raft-wal's default, 64 MiB, would not fit the small store
// filesystems Sheepdog runs on (its functional suite makes 30 MiB ones),
// and the space is taken from what a node reports as its size (its
// objects plus its free space, as Sheepdog reports it): Sheepdog's test
// 113 expects a 100 MiB store with 1 KiB blocks to keep all but about
// 80 KB for objects. Our entries are cluster operations of a few hundred
// bytes in JSON, so a segment holds tens of them; a larger entry is still
// written whole (raft-wal seals the segment after it). A segment keeps the
// size it was created with.
const walSegmentSize = 12 << 10

// openLog opens raft's log and snapshot stores in Dir/raft.
func (d *Driver) openLog() error {
	walDir := filepath.Join(d.raftDir(), "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return err
	}
	if err := migrateSegmentNames(walDir); err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	reserve := &logReserve{path: filepath.Join(d.raftDir(), logReserveName), size: walSegmentSize + segmentSlack}
	reserve.fill()
	// WAL.Close leaves its meta store open: the driver keeps it to close
	// it, or reopening the log in this process (dropLog, a test) would
	// find its files still open.
	meta := &walmeta.Store{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta), wal.WithSegmentSize(walSegmentSize),
		wal.WithSegmentFiler(segment.NewFiler(walDir, newWALFS(reserve))))
	if err != nil {
		meta.Close()
		return fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStore(d.raftDir(), 2, d.raftLog)
	if err != nil {
		w.Close()
		meta.Close()
		return err
	}
	d.wal, d.walMeta, d.snaps = w, meta, snaps
	return nil
}

// closeLog closes raft's log (after raft stopped using it).
func (d *Driver) closeLog() {
	d.wal.Close()
	d.walMeta.Close()
}

// dropLog deletes raft's log and snapshots and empties the state: this
// node rejoins its cluster as a new member and gets both from the leader.
// Until the leader's snapshot names its cluster again, it gossips no
// identity, as a new node: it holds no history of any generation (a node
// of the newer one waits for that before it starts raft, waitOlderYield).
func (d *Driver) dropLog() error {
	d.closeLog()
	for _, p := range []string{"wal", "snapshots"} {
		if err := os.RemoveAll(filepath.Join(d.raftDir(), p)); err != nil {
			return fmt.Errorf("drop raft log: %w", err)
		}
	}
	if err := d.openLog(); err != nil {
		return err
	}
	d.fsm.reset()
	d.setIdentity(Identity{})
	d.gathered.Store(false)
	d.rejoined.Store(true)
	d.caughtUp.Store(true) // a new member: nothing of its own to catch up with
	d.endJoinWait()
	return nil
}

func (d *Driver) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(d.cfg.Self.NodeID.String())
	rc.HeartbeatTimeout = d.cfg.HeartbeatTimeout
	rc.ElectionTimeout = d.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = d.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = d.cfg.CommitTimeout
	rc.SnapshotThreshold = d.cfg.SnapshotThreshold
	if d.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = d.cfg.TrailingLogs
	}
	if d.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = d.cfg.SnapshotInterval
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: d.raftLog, DisableTime: true})
	return rc
}

func (d *Driver) raftAddr() string {
	return net.JoinHostPort(d.cfg.Self.IP().String(), strconv.Itoa(d.cfg.raftPort()))
}

func (d *Driver) newTransport() (*raft.NetworkTransport, error) {
	advertise, err := net.ResolveTCPAddr("tcp", d.raftAddr())
	if err != nil {
		return nil, err
	}
	port := d.cfg.raftPort()
	bind := net.JoinHostPort(d.cfg.BindAddr, strconv.Itoa(port))
	if d.cfg.RaftServerTLS != nil {
		l, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, fmt.Errorf("raft listen on port %d: %w", port, err)
		}
		stream := &tlsStream{Listener: tls.NewListener(l, d.cfg.RaftServerTLS), advertise: advertise, client: d.cfg.RaftClientTLS}
		return raft.NewNetworkTransport(stream, 4, 10*time.Second, d.raftLog), nil
	}
	trans, err := raft.NewTCPTransport(bind, advertise, 4, 10*time.Second, d.raftLog)
	if err != nil {
		return nil, fmt.Errorf("raft listen on port %d: %w", port, err)
	}
	return trans, nil
}

// startRaft starts a raft instance over the current stores.
func (d *Driver) startRaft(bootstrap bool) error {
	trans, err := d.newTransport()
	if err != nil {
		return err
	}
	rc := d.raftConfig()
	r, err := raft.NewRaft(rc, d.fsm, d.wal, d.wal, d.snaps, trans)
	if err != nil {
		trans.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	r.RegisterObserver(raft.NewObserver(d.obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	d.raft.Store(r)
	if bootstrap {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return err
		}
		d.cfg.Log.Info("bootstrapped a new cluster")
	}
	return nil
}

// storedPeers returns the protocol addresses of the other servers in the
// raft configuration this node stored.
func (d *Driver) storedPeers() []string {
	_, trans := raft.NewInmemTransport("")
	conf, err := raft.GetConfiguration(d.raftConfig(), newFSM(), d.wal, d.wal, d.snaps, trans)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range conf.Servers {
		if string(s.ID) != d.cfg.Self.NodeID.String() {
			out = append(out, string(s.ID))
		}
	}
	return out
}

// gossipAddrs turns protocol addresses into gossip addresses.
func gossipAddrs(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		port, _ := strconv.Atoi(p)
		out = append(out, net.JoinHostPort(h, strconv.Itoa(DefaultGossipPort(port))))
	}
	return out
}

// Close leaves the cluster and stops raft. A leader hands its vote over
// first (handOff), so that a cluster left with one node by a clean stop
// still has a voter.
func (d *Driver) Close() {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.wg.Wait() // no reconcile from here on: it would take the vote back
		d.handOff()
		d.ml.Leave(time.Second)
		d.ml.Shutdown()
		d.raftMu.Lock()
		// A snapshot of what the state holds now, when the log has
		// entries the last one lacks: the next start restores it instead
		// of waiting for a leader to replay them.
		if err := d.r().Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			d.cfg.Log.Warn("raft snapshot at stop", "err", err)
		}
		d.r().Shutdown().Error()
		d.closeLog()
		d.raftMu.Unlock()
	})
}

// handOff runs on a leader that leaves while the cluster lives on: it
// makes sure another live node votes, then removes itself from raft's
// configuration (the leader steps down once that commits). Without it,
// the voter policy's single voter of a two-node cluster would take the
// only vote away and the node that stays could never commit the epoch
// without it. Bounded: a leave must not hang on a cluster in trouble.
func (d *Driver) handOff() {
	r := d.r()
	if r.State() != raft.Leader || d.stopping.Load() {
		return
	}
	self := raft.ServerID(d.cfg.Self.NodeID.String())
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	live := d.liveServers(nil) // not the held: the vote goes to a node known alive
	otherVoter := false
	for _, s := range cf.Configuration().Servers {
		if _, ok := live[s.ID]; ok && s.ID != self && s.Suffrage == raft.Voter {
			otherVoter = true
		}
	}
	if !otherVoter {
		ids := make([]raft.ServerID, 0, len(live))
		for id := range live {
			if id != self {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return // the last node: nobody to hand over to
		}
		slices.Sort(ids)
		if err := r.AddVoter(ids[0], live[ids[0]], 0, 3*time.Second).Error(); err != nil {
			d.cfg.Log.Warn("leave: handing the vote over failed", "to", ids[0], "err", err)
			return
		}
	}
	if err := r.RemoveServer(self, 0, 3*time.Second).Error(); err != nil {
		d.cfg.Log.Warn("leave: stepping down failed", "err", err)
		return
	}
	d.cfg.Log.Info("leave: raft vote handed over")
}

// Leave takes this node out of the cluster for good while the process
// lives on (KILL_NODE, or a failed store): it announces its departure, so
// the others commit a new epoch without it, and stops taking part in raft.
func (d *Driver) Leave() { d.Close() }

// View implements cluster.Driver.
func (d *Driver) View(f func(s *cluster.State)) {
	d.fsm.mu.RLock()
	defer d.fsm.mu.RUnlock()
	f(d.fsm.st)
}

// ReadState implements cluster.Driver.
func (d *Driver) ReadState() *cluster.State {
	d.fsm.mu.RLock()
	return d.fsm.st
}

// ReleaseState implements cluster.Driver.
func (d *Driver) ReleaseState() { d.fsm.mu.RUnlock() }

// WaitApplied blocks until the local state holds the command at index (or
// a later one) or ctx ends. index must be a command's index (what the
// leader's Apply returned): raft's no-op and configuration entries never
// reach the state.
func (d *Driver) WaitApplied(ctx context.Context, index uint64) error {
	return d.fsm.wait(ctx, func() bool { return d.fsm.applied >= index })
}

// WaitEpoch implements cluster.EpochWaiter.
func (d *Driver) WaitEpoch(ctx context.Context, epoch uint32) error {
	return d.fsm.wait(ctx, func() bool { return d.fsm.st.Epoch() >= epoch })
}

func (d *Driver) appliedIndex() uint64 {
	d.fsm.mu.RLock()
	defer d.fsm.mu.RUnlock()
	return d.fsm.applied
}

// Propose implements cluster.Driver: applied by the leader (forwarded
// there when this node is a follower), and applied locally before it
// returns.
func (d *Driver) Propose(ctx context.Context, e *cluster.Entry) (proto.Result, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ProposeTimeout)
	defer cancel()
	for {
		res, idx, err := d.ProposeEncoded(ctx, b)
		if err == nil {
			if err := d.WaitApplied(ctx, idx); err != nil {
				return 0, fmt.Errorf("wait for entry %d: %w", idx, err)
			}
			return res, nil
		}
		if !noLeader(err) {
			return 0, err
		}
		// No leader this node can reach for QuorumWait: it is cut off from
		// the majority, or the majority is gone. The change is refused as
		// writes are (HALT) rather than left to time out.
		if d.leaderlessFor() >= cluster.QuorumWait {
			return 0, fmt.Errorf("no cluster leader for %v to order the request: %w", cluster.QuorumWait, proto.ResHalt)
		}
		if err := d.waitLeaderChange(ctx, 100*time.Millisecond); err != nil {
			return 0, fmt.Errorf("no cluster leader to order the request: %w", proto.ResHalt)
		}
	}
}

var errNoLeader = errors.New("no raft leader")

// noLeader reports errors after which a proposal is retried once a leader
// is known.
func noLeader(err error) bool {
	return errors.Is(err, errNoLeader) || errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// ProposeEncoded applies an encoded entry if this node leads, or forwards
// it to the leader. It returns the result and the entry's log index.
//
// An empty entry is a read barrier: the leader answers with its applied
// index without writing anything.
func (d *Driver) ProposeEncoded(ctx context.Context, b []byte) (proto.Result, uint64, error) {
	r := d.r()
	if r.State() == raft.Leader {
		if len(b) == 0 {
			if err := d.leaderCaughtUp(ctx, r); err != nil {
				return 0, 0, err
			}
			return proto.ResSuccess, d.appliedIndex(), nil
		}
		f := r.Apply(b, 10*time.Second)
		if err := f.Error(); err != nil {
			return 0, 0, err
		}
		d.nudge(r)
		res, _ := f.Response().(proto.Result)
		return res, f.Index(), nil
	}
	_, id := r.LeaderWithID()
	if id == "" || d.cfg.Forward == nil {
		return 0, 0, errNoLeader
	}
	res, idx, err := d.cfg.Forward(ctx, string(id), b)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: forward to %s: %v", errNoLeader, id, err)
	}
	return res, idx, nil
}

// nudge makes the followers learn the commit index of the command just
// applied now rather than at the next CommitTimeout: a barrier is a log
// entry, so raft replicates it at once, and its AppendEntries carries the
// leader's commit index. A follower that forwarded the command waits for
// that index (WaitApplied) before it answers its client. Commands are
// rare (VDI and membership changes), so the extra entry costs little; the
// barrier's own result is of no interest.
func (d *Driver) nudge(r *raft.Raft) {
	go r.Barrier(time.Second)
}

// Sync implements cluster.Driver. The leader's state already holds
// everything it acknowledged; a follower asks the leader for its applied
// index and waits to reach it. Without a leader for NoLeaderWait there is
// no majority this node can reach, and nothing this node could learn: Sync
// returns and the caller serves the local state (reads of local copies go
// on in a minority; writes wait for Quorum).
//
// A node restarted from a snapshot holds entries in its log that its state
// lacks until a leader tells it they are committed. Without a leader it
// serves its state only once that state holds its whole log (CaughtUp);
// until then Sync waits, and fails with WAIT_FOR_JOIN when its time is up,
// so that no lookup answers NO_VDI for a VDI the log has.
func (d *Driver) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if r := d.r(); r.State() == raft.Leader {
		return d.leaderCaughtUp(ctx, r)
	}
	for {
		_, idx, err := d.ProposeEncoded(ctx, nil)
		if err == nil {
			return d.WaitApplied(ctx, idx)
		}
		if d.leaderlessFor() >= d.cfg.NoLeaderWait && d.CaughtUp() {
			return nil
		}
		if err := d.waitLeaderChange(ctx, 100*time.Millisecond); err != nil {
			if !d.CaughtUp() {
				return fmt.Errorf("state not caught up with the raft log, and no leader: %w", proto.ResWaitForJoin)
			}
			return fmt.Errorf("sync with the cluster leader: %w", proto.ResClusterError)
		}
	}
}

// leaderCaughtUp returns once the leader's state holds every entry of its
// log it knows committed. Entries it acknowledged itself are applied
// before the answer, but a newly elected leader may not have reached those
// the old leader acknowledged: then a barrier waits until they are applied
// (the barrier is answered after every entry before it has run in the
// FSM). Otherwise every entry has been handed to the FSM, which may still
// be running them (after a restart, thousands): it waits for the last
// command among them.
func (d *Driver) leaderCaughtUp(ctx context.Context, r *raft.Raft) error {
	if r.AppliedIndex() < r.LastIndex() {
		if err := r.Barrier(10 * time.Second).Error(); err != nil {
			return fmt.Errorf("%w: catch up with the log: %v", errNoLeader, err)
		}
		return nil
	}
	// raft has handed every entry up to its applied index to the FSM;
	// the FSM may still be running the commands among them.
	if k := d.pendingCommand(r.AppliedIndex()); k > 0 {
		return d.WaitApplied(ctx, k)
	}
	return nil
}

// pendingCommand returns the index of the last command at or below idx
// that the state does not hold yet, or 0 when it holds them all. raft's
// no-op, configuration and barrier entries never reach the state, so the
// state's index alone cannot tell; the log can. Entries gone from the log
// were compacted into a snapshot, which the state holds.
func (d *Driver) pendingCommand(idx uint64) uint64 {
	d.raftMu.Lock()
	defer d.raftMu.Unlock()
	applied := d.appliedIndex()
	for i := idx; i > applied; i-- {
		var l raft.Log
		if err := d.wal.GetLog(i, &l); err != nil {
			return 0
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// CaughtUp reports whether the state holds every command of the raft log
// this node started with (true for a node that started without one). A
// restarted node's log ends with entries its snapshot lacks; raft applies
// them only once a leader says they are committed, so until then the
// state is older than what this node had already acknowledged.
func (d *Driver) CaughtUp() bool {
	if d.caughtUp.Load() {
		return true
	}
	// The state's own index, not raft's AppliedIndex: raft moves that
	// only after handing a batch to the FSM, so it can trail a barrier
	// that already returned. Entries that are not commands (no-ops,
	// configurations, barriers) never reach the state.
	if d.pendingCommand(d.startLast) > 0 {
		return false
	}
	d.caughtUp.Store(true)
	return true
}

// watchLeader turns raft's leader observations into the leader
// notification.
func (d *Driver) watchLeader() {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case o := <-d.obs:
			lo, _ := o.Data.(raft.LeaderObservation)
			d.leaderMu.Lock()
			if lo.LeaderID == "" {
				if d.leaderless.IsZero() {
					d.leaderless = time.Now()
				}
			} else {
				d.leaderless = time.Time{}
			}
			close(d.leaderCh)
			d.leaderCh = make(chan struct{})
			d.leaderMu.Unlock()
			if lo.LeaderID == "" {
				d.cfg.Log.Info("raft leader lost")
			} else {
				d.cfg.Log.Info("raft leader", "id", string(lo.LeaderID))
			}
			d.poke()
		}
	}
}

// leaderlessFor is how long this node has known no leader (0: it knows
// one).
func (d *Driver) leaderlessFor() time.Duration {
	if _, id := d.r().LeaderWithID(); id != "" {
		return 0
	}
	d.leaderMu.Lock()
	defer d.leaderMu.Unlock()
	if d.leaderless.IsZero() {
		d.leaderless = time.Now() // raft lost it without an observation yet
	}
	return time.Since(d.leaderless)
}

// waitLeaderChange waits until raft reports a leader change or max
// passes; it fails only when ctx ends.
func (d *Driver) waitLeaderChange(ctx context.Context, max time.Duration) error {
	d.leaderMu.Lock()
	ch := d.leaderCh
	d.leaderMu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-t.C:
	}
	return nil
}

// Quorum implements cluster.Membership: a leader is known, so entries and
// writes can be ordered.
func (d *Driver) Quorum() bool {
	_, id := d.r().LeaderWithID()
	return id != ""
}

// WaitQuorum implements cluster.Membership: it waits until a leader is
// known or ctx ends.
func (d *Driver) WaitQuorum(ctx context.Context) error {
	for !d.Quorum() {
		if err := d.waitLeaderChange(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// Rejoining implements cluster.Membership: this node belongs to a cluster
// whose state it has not replayed yet (a restart before the log is
// applied, or a rejoin after a re-forming): requests then get
// WAIT_FOR_JOIN rather than WAIT_FOR_FORMAT.
func (d *Driver) Rejoining() bool {
	if !d.hasState && !d.rejoined.Load() {
		return false
	}
	formatted := false
	d.View(func(s *cluster.State) { formatted = s.Formatted() })
	return !formatted
}

func (d *Driver) endJoinWait() {
	d.waitMu.Lock()
	d.joinWait = false
	d.waitMu.Unlock()
}

// WaitingForJoin implements cluster.Membership: this node, restarted as
// part of a cluster, still waits for the nodes of the last epoch
// (WAIT_FOR_JOIN): serving before they are back could serve copies older
// than theirs.
func (d *Driver) WaitingForJoin() bool {
	d.waitMu.Lock()
	w := d.joinWait
	d.waitMu.Unlock()
	if !w {
		return false
	}
	var last []proto.Node
	formatted := false
	d.View(func(s *cluster.State) { last, formatted = s.Nodes(), s.Formatted() })
	if !formatted {
		return d.hasState // a new node waits for the format, not for joins
	}
	if d.cfg.Dead != nil {
		if _, peer := d.newerGeneration(); peer != "" {
			// A newer history of this cluster is back: this node
			// rejoins it (RejoinNewer) rather than end its wait with
			// an epoch of its own history.
			return true
		}
	}
	live := map[string]bool{}
	for _, n := range d.Members() {
		live[n.NodeID.String()] = true
	}
	for _, n := range last {
		if !live[n.NodeID.String()] {
			return true
		}
	}
	if d.hasState {
		d.gathered.Store(true)
	}
	d.endJoinWait()
	return false
}

// applied is the FSM's hook: the driver's own side effects, then the
// caller's OnApply.
func (d *Driver) applied(e *cluster.Entry, res proto.Result) {
	if res == proto.ResSuccess {
		switch e.Kind {
		case cluster.KindEpoch:
			if e.Time >= d.started.UnixNano() {
				d.endJoinWait()
				d.gathered.Store(false)
			}
			d.peersChanged(e)
			if e.Forced {
				d.syncIdentity()
			}
		case cluster.KindShutdown:
			if e.Time >= d.started.UnixNano() {
				// The whole cluster is stopping: nodes going away now must
				// not become new epochs, or the restart would find a last
				// epoch that lacks most of the nodes holding the data.
				d.stopping.Store(true)
			}
		case cluster.KindFormat, cluster.KindIdentity:
			if e.Kind == cluster.KindFormat && e.Time >= d.started.UnixNano() {
				// A format names the nodes live now as the epoch: nobody
				// is left to wait for.
				d.endJoinWait()
				d.gathered.Store(false)
			}
			d.syncIdentity()
		}
	}
	if d.cfg.OnApply != nil {
		d.cfg.OnApply(e, res)
	}
}
