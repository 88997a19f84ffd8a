package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Port offsets: a sheep on protocol port P gossips on P+GossipOffset (TCP
// and UDP) and runs raft on P+RaftOffset, so several sheeps share a host
// with only -p and the dir changed.
const (
	GossipOffset = 10000
	RaftOffset   = 20000
	maxVoters    = 5
)

// ForwardFunc sends an encoded entry to the leader (known by its protocol
// address) and returns the result and the log index it was applied at.
type ForwardFunc func(ctx context.Context, leader string, entry []byte) (proto.Result, uint64, error)

// RaftConfig configures the replicated driver.
type RaftConfig struct {
	Dir      string
	Self     proto.Node
	BindAddr string // interface to bind gossip and raft to
	Join     []string
	Forward  ForwardFunc
	// OnApply runs after every applied entry, outside the state lock, for
	// side effects local to this node (wiping the store on format).
	OnApply func(e *Entry, res proto.Result)
	Log     *slog.Logger
}

// Raft orders entries through hashicorp/raft and tracks membership with
// hashicorp/memberlist. Every membership change the leader sees becomes an
// epoch entry.
type Raft struct {
	cfg  RaftConfig
	fsm  *fsm
	raft *raft.Raft
	ml   *memberlist.Memberlist
	wal  *wal.WAL

	hasState bool // raft had a log when this sheep started
	started  time.Time

	// waitMu guards joinWait: set at start-up of a node that belongs to a
	// cluster, cleared for good once every node of the last epoch is back
	// or a new epoch is committed after the start (a force-recover, or the
	// leader seeing a membership change).
	waitMu   sync.Mutex
	joinWait bool

	stopping  atomic.Bool // a cluster shutdown was applied
	kick      chan struct{}
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// fsm applies raft log entries to the State.
type fsm struct {
	mu sync.RWMutex
	st *State
	// applied is the log index of the last command in st. Invariant: st
	// holds exactly the commands with index <= applied. raft's own
	// AppliedIndex runs ahead of this: raft counts an entry applied when
	// it queues it for the FSM, not when the FSM has run it.
	applied uint64
	onApply func(e *Entry, res proto.Result)
}

func (f *fsm) Apply(l *raft.Log) interface{} {
	var e Entry
	if err := json.Unmarshal(l.Data, &e); err != nil {
		f.mu.Lock()
		f.applied = l.Index
		f.mu.Unlock()
		return proto.ResInvalidParms
	}
	f.mu.Lock()
	res := f.st.Apply(&e)
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(&e, res)
	}
	f.mu.Lock()
	f.applied = l.Index // after onApply: a waiter sees its effects too
	f.mu.Unlock()
	return res
}

type fsmSnapshot struct{ b []byte }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (fsmSnapshot) Release() {}

// snapshotImage is what a raft snapshot holds: the state and the index of
// the last command in it.
type snapshotImage struct {
	Applied uint64
	State   *State
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(snapshotImage{Applied: f.applied, State: f.st})
	return fsmSnapshot{b}, err
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var img snapshotImage
	if err := json.Unmarshal(b, &img); err != nil {
		return err
	}
	if img.State == nil { // written before snapshots carried the index
		img.State = &State{}
		if err := json.Unmarshal(b, img.State); err != nil {
			return err
		}
	}
	img.State.init()
	img.State.rebuild()
	f.mu.Lock()
	f.st = img.State
	f.applied = img.Applied
	f.mu.Unlock()
	return nil
}

// appliedIndex is the index of the last command the state holds.
func (r *Raft) appliedIndex() uint64 {
	r.fsm.mu.RLock()
	defer r.fsm.mu.RUnlock()
	return r.fsm.applied
}

// waitApplied blocks until the local state holds the command at index (or
// a later one) or ctx ends. index must be a command's index (what the
// leader's Apply or appliedIndex returned): raft's no-op and configuration
// entries never reach the state.
func (r *Raft) waitApplied(ctx context.Context, index uint64) error {
	for delay := 200 * time.Microsecond; r.appliedIndex() < index; delay = min(2*delay, 10*time.Millisecond) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	return nil
}

// nodeMeta is what a sheep gossips: its sd_node, cluster ctime, raft port.
func encodeMeta(n proto.Node, ctime uint64, raftPort uint16) []byte {
	b := make([]byte, proto.NodeSize+10)
	n.Marshal(b)
	binary.LittleEndian.PutUint64(b[proto.NodeSize:], ctime)
	binary.LittleEndian.PutUint16(b[proto.NodeSize+8:], raftPort)
	return b
}

func decodeMeta(b []byte) (proto.Node, uint64, uint16, error) {
	var n proto.Node
	if len(b) < proto.NodeSize+10 {
		return n, 0, 0, fmt.Errorf("short node metadata (%d bytes)", len(b))
	}
	n.Unmarshal(b)
	return n, binary.LittleEndian.Uint64(b[proto.NodeSize:]), binary.LittleEndian.Uint16(b[proto.NodeSize+8:]), nil
}

type delegate struct{ r *Raft }

func (d delegate) NodeMeta(limit int) []byte {
	var ctime uint64
	d.r.View(func(s *State) { ctime = s.Ctime })
	return encodeMeta(d.r.cfg.Self, ctime, d.r.cfg.Self.Port+RaftOffset)
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(*memberlist.Node)   { d.r.poke() }
func (d delegate) NotifyLeave(*memberlist.Node)  { d.r.poke() }
func (d delegate) NotifyUpdate(*memberlist.Node) { d.r.poke() }

// NotifyAlive refuses peers of another cluster (a different ctime).
func (d delegate) NotifyAlive(peer *memberlist.Node) error {
	_, ctime, _, err := decodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	var mine uint64
	d.r.View(func(s *State) { mine = s.Ctime })
	if mine != 0 && ctime != 0 && ctime != mine {
		return fmt.Errorf("node %s belongs to another cluster (ctime %x, ours %x)", peer.Name, ctime, mine)
	}
	return nil
}

func (r *Raft) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// OpenRaft starts raft and memberlist for this node. A node with no raft
// state and no peers to join bootstraps a one-node cluster.
func OpenRaft(cfg RaftConfig) (*Raft, error) {
	r := &Raft{cfg: cfg, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	r.fsm = &fsm{st: &State{}, onApply: cfg.OnApply}
	r.fsm.st.init()

	raftDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(filepath.Join(raftDir, "wal"), 0o755); err != nil {
		return nil, err
	}
	w, err := wal.Open(filepath.Join(raftDir, "wal"))
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	r.wal = w
	snaps, err := raft.NewFileSnapshotStore(raftDir, 2, io.Discard)
	if err != nil {
		return nil, err
	}
	host := cfg.Self.IP().String()
	raftAddr := net.JoinHostPort(host, strconv.Itoa(int(cfg.Self.Port)+RaftOffset))
	advertise, err := net.ResolveTCPAddr("tcp", raftAddr)
	if err != nil {
		return nil, err
	}
	trans, err := raft.NewTCPTransport(net.JoinHostPort(cfg.BindAddr, strconv.Itoa(int(cfg.Self.Port)+RaftOffset)), advertise, 4, 10*time.Second, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("raft listen on port %d: %w", int(cfg.Self.Port)+RaftOffset, err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Self.NodeID.String())
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = 1024
	rc.LogOutput = io.Discard
	hasState, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return nil, err
	}
	r.hasState = hasState
	r.joinWait = hasState
	r.started = time.Now()
	onApply := cfg.OnApply
	r.fsm.onApply = func(e *Entry, res proto.Result) {
		if e.Kind == KindEpoch && res == proto.ResSuccess && e.Time >= r.started.Unix() {
			r.endJoinWait()
		}
		if e.Kind == KindShutdown && res == proto.ResSuccess && e.Time >= r.started.UnixNano() {
			// The whole cluster is stopping: nodes going away now must not
			// become new epochs, or the restart would find a last epoch
			// that lacks most of the nodes holding the data.
			r.stopping.Store(true)
		}
		if onApply != nil {
			onApply(e, res)
		}
	}
	r.raft, err = raft.NewRaft(rc, r.fsm, w, w, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if !hasState && len(cfg.Join) == 0 {
		f := r.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, err
		}
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Self.NodeID.String()
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = int(cfg.Self.Port) + GossipOffset
	mc.AdvertiseAddr = host
	mc.AdvertisePort = mc.BindPort
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.SuspicionMult = 2
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 5 * time.Second
	mc.LogOutput = io.Discard
	mc.Delegate = delegate{r}
	mc.Events = delegate{r}
	mc.Alive = delegate{r}
	r.ml, err = memberlist.Create(mc)
	if err != nil {
		r.raft.Shutdown().Error()
		return nil, fmt.Errorf("gossip on port %d: %w", mc.BindPort, err)
	}
	peers := gossipAddrs(cfg.Join)
	if len(peers) == 0 && hasState {
		// A restarted node finds its cluster through the raft
		// configuration it stored (its state machine is replayed only once
		// a leader is known).
		if f := r.raft.GetConfiguration(); f.Error() == nil {
			for _, srv := range f.Configuration().Servers {
				if string(srv.ID) != mc.Name {
					peers = append(peers, gossipAddrs([]string{string(srv.ID)})...)
				}
			}
		}
	}
	if len(peers) > 0 {
		// The peers may be starting too: retry for a while before giving up
		// on an explicit --join.
		var err error
		for deadline := time.Now().Add(15 * time.Second); ; {
			if _, err = r.ml.Join(peers); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil && len(cfg.Join) > 0 {
			r.Close()
			return nil, fmt.Errorf("join %v: %w", cfg.Join, err)
		}
	}
	r.wg.Add(1)
	go r.reconcileLoop()
	return r, nil
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
		out = append(out, net.JoinHostPort(h, strconv.Itoa(port+GossipOffset)))
	}
	return out
}

// Close leaves the cluster and stops raft.
func (r *Raft) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		r.wg.Wait()
		if r.ml != nil {
			r.ml.Leave(time.Second)
			r.ml.Shutdown()
		}
		r.raft.Shutdown().Error()
		r.wal.Close()
	})
}

// Leave takes this node out of the cluster for good while the process
// lives on (KILL_NODE): it announces its departure, so the others commit
// a new epoch without it, and stops taking part in raft.
func (r *Raft) Leave() { r.Close() }

// View implements Driver.
func (r *Raft) View(f func(s *State)) {
	r.fsm.mu.RLock()
	defer r.fsm.mu.RUnlock()
	f(r.fsm.st)
}

// Propose implements Driver: applied by the leader (forwarded there when
// this node is a follower), and applied locally before it returns.
func (r *Raft) Propose(ctx context.Context, e *Entry) (proto.Result, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		res, idx, err := r.ProposeEncoded(ctx, b)
		if err == nil {
			if err := r.waitApplied(ctx, idx); err != nil {
				return 0, fmt.Errorf("wait for entry %d: %w", idx, err)
			}
			return res, nil
		}
		if !errors.Is(err, errNoLeader) && !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no cluster leader to order the request: %w", proto.ResClusterError)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errNoLeader = errors.New("no raft leader")

// ProposeEncoded applies an encoded entry if this node leads, or forwards
// it to the leader. It returns the result and the entry's log index.
//
// An empty entry is a read barrier: the leader answers with its applied
// index without writing anything.
func (r *Raft) ProposeEncoded(ctx context.Context, b []byte) (proto.Result, uint64, error) {
	if r.raft.State() == raft.Leader {
		if len(b) == 0 {
			if err := r.leaderCaughtUp(); err != nil {
				return 0, 0, err
			}
			return proto.ResSuccess, r.appliedIndex(), nil
		}
		f := r.raft.Apply(b, 10*time.Second)
		if err := f.Error(); err != nil {
			return 0, 0, err
		}
		res, _ := f.Response().(proto.Result)
		return res, f.Index(), nil
	}
	_, id := r.raft.LeaderWithID()
	if id == "" || r.cfg.Forward == nil {
		return 0, 0, errNoLeader
	}
	res, idx, err := r.cfg.Forward(ctx, string(id), b)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: forward to %s: %v", errNoLeader, id, err)
	}
	return res, idx, nil
}

// Sync implements Driver. The leader's state already holds everything it
// acknowledged; a follower asks the leader for its applied index and waits
// to reach it.
func (r *Raft) Sync(ctx context.Context) error {
	if r.raft.State() == raft.Leader {
		return r.leaderCaughtUp()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, idx, err := r.ProposeEncoded(ctx, nil)
		if err == nil {
			return r.waitApplied(ctx, idx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sync with the cluster leader: %w", proto.ResClusterError)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// leaderCaughtUp returns once the leader has handed every entry of its log
// to the state machine. Entries it acknowledged itself are applied before
// the answer, but a newly elected leader may not have reached those the
// old leader acknowledged: then a barrier waits until they are applied.
// (An entry already handed over may still be running in the FSM for a few
// microseconds; waiting on it would cost a log append per read.)
func (r *Raft) leaderCaughtUp() error {
	if r.raft.AppliedIndex() >= r.raft.LastIndex() {
		return nil
	}
	if err := r.raft.Barrier(10 * time.Second).Error(); err != nil {
		return fmt.Errorf("%w: catch up with the log: %v", errNoLeader, err)
	}
	return nil
}

// Rejoining reports whether this node belongs to a cluster whose state it
// has not replayed yet (a restart before the log is applied): requests then
// get WAIT_FOR_JOIN rather than WAIT_FOR_FORMAT.
func (r *Raft) Rejoining() bool {
	if !r.hasState {
		return false
	}
	formatted := false
	r.View(func(s *State) { formatted = s.Formatted() })
	return !formatted
}

func (r *Raft) endJoinWait() {
	r.waitMu.Lock()
	r.joinWait = false
	r.waitMu.Unlock()
}

// WaitingForJoin reports whether this node, restarted as part of a
// cluster, still waits for the nodes of the last epoch (WAIT_FOR_JOIN):
// serving before they are back could serve copies older than theirs.
func (r *Raft) WaitingForJoin() bool {
	r.waitMu.Lock()
	w := r.joinWait
	r.waitMu.Unlock()
	if !w {
		return false
	}
	var last []proto.Node
	formatted := false
	r.View(func(s *State) { last, formatted = s.Nodes(), s.Formatted() })
	if !formatted {
		return true
	}
	live := map[string]bool{}
	for _, n := range r.Members() {
		live[n.NodeID.String()] = true
	}
	for _, n := range last {
		if !live[n.NodeID.String()] {
			return true
		}
	}
	r.endJoinWait()
	return false
}

// Members returns the live members memberlist knows, in node order.
func (r *Raft) Members() []proto.Node {
	var out []proto.Node
	for _, m := range r.ml.Members() {
		if n, _, _, err := decodeMeta(m.Meta); err == nil {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	return out
}

func (r *Raft) reconcileLoop() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
		case <-t.C:
		}
		if r.raft.State() == raft.Leader {
			if err := r.reconcile(); err != nil {
				r.cfg.Log.Warn("membership reconcile", "err", err)
			}
		}
	}
}

// reconcile runs on the leader: raft's configuration follows memberlist
// (voters up to 5, one voter while fewer than three nodes live), and a
// changed member set commits a new epoch.
func (r *Raft) reconcile() error {
	if r.stopping.Load() {
		return nil
	}
	type member struct {
		node proto.Node
		addr raft.ServerAddress
	}
	live := map[raft.ServerID]member{}
	for _, m := range r.ml.Members() {
		n, _, rport, err := decodeMeta(m.Meta)
		if err != nil {
			continue
		}
		live[raft.ServerID(n.NodeID.String())] = member{n, raft.ServerAddress(net.JoinHostPort(n.IP().String(), strconv.Itoa(int(rport))))}
	}
	cf := r.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	self := raft.ServerID(r.cfg.Self.NodeID.String())
	inConf := map[raft.ServerID]raft.ServerSuffrage{}
	voters := 0
	for _, s := range cf.Configuration().Servers {
		inConf[s.ID] = s.Suffrage
		if _, ok := live[s.ID]; !ok && s.ID != self {
			if err := r.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
				return err
			}
			delete(inConf, s.ID)
			continue
		}
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	want := 1
	if len(live) >= 3 {
		want = min(maxVoters, len(live))
	}
	ids := make([]raft.ServerID, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id == self {
			continue
		}
		suf, ok := inConf[id]
		switch {
		case (!ok || suf != raft.Voter) && voters < want:
			if err := r.raft.AddVoter(id, live[id].addr, 0, 5*time.Second).Error(); err != nil {
				return err
			}
			voters++
		case !ok:
			if err := r.raft.AddNonvoter(id, live[id].addr, 0, 5*time.Second).Error(); err != nil {
				return err
			}
		case suf == raft.Voter && voters > want:
			if err := r.raft.DemoteVoter(id, 0, 5*time.Second).Error(); err != nil {
				return err
			}
			voters--
		}
	}

	if r.WaitingForJoin() {
		return nil // no epoch change until the last epoch's nodes are back (or force)
	}
	var formatted bool
	var cur []proto.Node
	var auto bool
	r.View(func(s *State) {
		formatted, cur, auto = s.Formatted(), s.Nodes(), s.Flags&proto.ClusterFlagAutoVnodes != 0
	})
	if !formatted {
		return nil
	}
	nodes := make([]proto.Node, 0, len(live))
	for _, id := range ids {
		nodes = append(nodes, live[id].node)
	}
	if auto {
		nodes = placement.AutoVnodes(nodes)
	}
	slices.SortFunc(nodes, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	if slices.Equal(nodes, cur) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.Propose(ctx, &Entry{Kind: KindEpoch, Nodes: nodes, Time: time.Now().Unix()})
	if err == nil {
		r.cfg.Log.Info("new epoch", "nodes", len(nodes))
	}
	return err
}
