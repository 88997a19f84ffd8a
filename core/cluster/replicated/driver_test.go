package replicated

import (
	"context"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// freeBase returns a port P with P, P+GossipOffset (TCP and UDP) and
// P+RaftOffset free, all below the ephemeral range.
func freeBase(t *testing.T) uint16 {
	for range 1000 {
		p := 11000 + rand.IntN(32768-RaftOffset-11000)
		ok := true
		var cl []io.Closer
		for _, q := range []int{p, p + GossipOffset, p + RaftOffset} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				ok = false
				break
			}
			cl = append(cl, l)
		}
		if u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+GossipOffset)); err == nil {
			cl = append(cl, u)
		} else {
			ok = false
		}
		for _, c := range cl {
			c.Close()
		}
		if ok {
			return uint16(p)
		}
	}
	t.Fatal("no free ports")
	return 0
}

// crash stops d as a killed process would: no gossip leave, no goodbye.
func (d *Driver) crash() {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.wg.Wait()
		d.ml.Shutdown()
		d.raftMu.Lock()
		d.r().Shutdown().Error()
		d.closeLog()
		d.raftMu.Unlock()
	})
}

// startDrivers opens n drivers in one process, the first bootstrapping,
// the others joining it, forwarding proposals to each other directly.
func startDrivers(t *testing.T, n int) []*Driver {
	byAddr := map[string]*Driver{}
	var ds []*Driver
	for i := range n {
		cfg := DefaultConfig()
		cfg.Dir = t.TempDir()
		cfg.BindAddr = "127.0.0.1"
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			cfg.Log = slog.Default().With("node", i)
		}
		cfg.Self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freeBase(t))), NrVnodes: 128, Zone: uint32(i)}
		cfg.Forward = func(ctx context.Context, leader string, entry []byte) (proto.Result, uint64, error) {
			return byAddr[leader].ProposeEncoded(ctx, entry)
		}
		if i > 0 {
			cfg.Join = []string{ds[0].cfg.Self.NodeID.String()}
		}
		d, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.crash)
		byAddr[cfg.Self.NodeID.String()] = d
		ds = append(ds, d)
	}
	return ds
}

// formatDrivers commits a format of the drivers' members with copies,
// proposed through ds[1] (a follower at first: the proposal is forwarded).
func formatDrivers(t *testing.T, ds []*Driver, copies uint8) {
	t.Helper()
	e := &cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: copies, Nodes: ds[0].Members(), Time: cluster.UnixNano(time.Now())}
	if res, err := ds[1].Propose(context.Background(), e); err != nil || res != proto.ResSuccess {
		t.Fatalf("format: %v %v", res, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func epochNodes(d *Driver) (uint32, int) {
	var e uint32
	var n int
	d.View(func(s *cluster.State) { e, n = s.Epoch(), len(s.Nodes()) })
	return e, n
}

// Three drivers in one process: two crash 0.3 s apart; the survivor has no
// quorum until ForceRecover, which re-forms the cluster around it and
// commits one epoch per failure, the first marked forced.
func TestDriverMinorityForceRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	ds := startDrivers(t, 3)
	waitFor(t, "three members", func() bool { return len(ds[0].Members()) == 3 })
	ctx := context.Background()
	formatDrivers(t, ds, 3)
	for _, d := range ds {
		if err := d.WaitEpoch(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three voters", func() bool {
		cf := ds[0].r().GetConfiguration()
		return cf.Error() == nil && len(cf.Configuration().Servers) == 3 && ds[0].Identity().ClusterID != ""
	})
	ds[0].crash()
	time.Sleep(300 * time.Millisecond)
	ds[1].crash()
	s := ds[2]
	waitFor(t, "no quorum", func() bool { return !s.Quorum() })
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync without a leader: %v", err)
	}
	waitFor(t, "failure detection", func() bool { return len(s.Members()) == 1 })
	last, err := s.ForceRecover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 3 {
		t.Fatalf("ForceRecover returned a last epoch of %d nodes", len(last))
	}
	waitFor(t, "an epoch per failure", func() bool { e, n := epochNodes(s); return e == 3 && n == 1 })
	var recs []cluster.EpochRecord
	s.View(func(st *cluster.State) { recs = append(recs, st.Epochs...) })
	if !recs[1].Forced || recs[2].Forced || len(recs[1].Nodes) != 2 {
		t.Fatalf("epochs %+v", recs)
	}
	if !s.Quorum() || s.Identity().Generation != 1 {
		t.Fatalf("after force: quorum %v, identity %+v", s.Quorum(), s.Identity())
	}
	if res, err := s.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: true}); err != nil || res != proto.ResSuccess {
		t.Fatalf("propose after force: %v %v", res, err)
	}
}

// A node told to join never bootstraps a cluster of its own: when its
// peers cannot be reached it fails to start, with no raft state left.
func TestJoinNeverBootstraps(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freeBase(t))), NrVnodes: 128}
	cfg.Join = []string{"127.0.0.1:" + strconv.Itoa(int(freeBase(t)))} // nobody there
	cfg.JoinRetry = 500 * time.Millisecond
	if d, err := Open(cfg); err == nil {
		d.crash()
		t.Fatal("a node whose --join peers are unreachable started")
	}
	cfg.Join = nil
	cfg.JoinRetry = DefaultConfig().JoinRetry
	d, err := Open(cfg) // the same dir, without --join: nothing was bootstrapped before
	if err != nil {
		t.Fatal(err)
	}
	defer d.crash()
	if d.hasState {
		t.Fatal("the failed join left raft state behind")
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Dir, good.Log = "x", slog.Default()
	good.Self.Port = 7000
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mod := range map[string]func(c *Config){
		"no dir":             func(c *Config) { c.Dir = "" },
		"gossip port = raft": func(c *Config) { c.GossipPort, c.RaftPort = 30000, 30000 },
		"gossip port 70000":  func(c *Config) { c.GossipPort = 70000 },
		"lease over beat":    func(c *Config) { c.LeaderLeaseTimeout = time.Second },
		"probe timeout":      func(c *Config) { c.ProbeTimeout = c.ProbeInterval },
		"zero voters":        func(c *Config) { c.MaxVoters = 0 },
		"negative heartbeat": func(c *Config) { c.HeartbeatTimeout = -1 },
	} {
		c := good
		mod(&c)
		if c.Validate() == nil {
			t.Errorf("%s: validated", name)
		}
	}
}

// Nodes that joined before the format do not wait for joins (the format
// is the epoch they belong to): when the leader leaves right after it, a
// survivor that becomes leader commits the epoch without it. They used to
// keep start-up's join wait until a reconcile ran on them as leader, and
// then waited forever for the node that had left.
func TestLeaderLeavesAfterFormat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	ds := startDrivers(t, 3)
	waitFor(t, "three members", func() bool { return len(ds[0].Members()) == 3 && len(ds[2].Members()) == 3 })
	ctx := context.Background()
	formatDrivers(t, ds, 3)
	for _, d := range ds {
		if err := d.WaitEpoch(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	var leader *Driver
	var rest []*Driver
	waitFor(t, "a leader", func() bool {
		leader, rest = nil, nil
		for _, d := range ds {
			if d.r().State() == raft.Leader {
				leader = d
			} else {
				rest = append(rest, d)
			}
		}
		return leader != nil
	})
	leader.Close()
	for _, d := range rest {
		waitFor(t, "the epoch without the leader that left", func() bool { e, n := epochNodes(d); return e == 2 && n == 2 })
	}
}

// A two-node cluster has one voter (VoterCount); when that node stops
// cleanly it hands the vote over, so the node that stays commits the
// epoch without it and goes on alone.
func TestLeavingVoterHandsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	ds := startDrivers(t, 2)
	waitFor(t, "two members", func() bool { return len(ds[0].Members()) == 2 && len(ds[1].Members()) == 2 })
	ctx := context.Background()
	formatDrivers(t, ds, 2)
	var voter, other *Driver
	waitFor(t, "one voter that leads, one non-voter", func() bool {
		voter, other = nil, nil
		for _, d := range ds {
			if d.r().State() != raft.Leader {
				other = d
				continue
			}
			cf := d.r().GetConfiguration()
			if cf.Error() != nil || len(cf.Configuration().Servers) != 2 {
				return false
			}
			n := 0
			for _, s := range cf.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					n++
				}
			}
			if n == 1 {
				voter = d
			}
		}
		return voter != nil && other != nil
	})
	voter.Close()
	waitFor(t, "the epoch without the voter that left", func() bool { e, n := epochNodes(other); return e == 2 && n == 1 })
	if res, err := other.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: true}); err != nil || res != proto.ResSuccess {
		t.Fatalf("propose on the node left alone: %v %v", res, err)
	}
}

// A peer gossip reports dead while it still answers the leader's ping is
// held: no epoch while it comes back (gossip's refutation, here a
// NotifyJoin), and a peer that really stopped answering leaves within a
// ping's timeout of the report, not leaveGrace.
func TestFalseDeathHeld(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	ds := startDrivers(t, 3)
	waitFor(t, "three members", func() bool { return len(ds[0].Members()) == 3 && len(ds[2].Members()) == 3 })
	formatDrivers(t, ds, 3)
	var leader *Driver
	var rest []*Driver
	waitFor(t, "a leader at epoch 1", func() bool {
		leader, rest = nil, nil
		for _, d := range ds {
			if e, _ := epochNodes(d); e != 1 {
				return false
			}
			if d.r().State() == raft.Leader {
				leader = d
			} else {
				rest = append(rest, d)
			}
		}
		return leader != nil
	})
	node := func(d *Driver) memberlist.Node {
		for _, n := range leader.ml.Members() {
			if n.Name == d.cfg.Self.NodeID.String() {
				return *n
			}
		}
		t.Fatalf("%s is not a member", d.cfg.Self.NodeID)
		return memberlist.Node{}
	}
	// A third node's "dead" broadcast about rest[0], accepted by the
	// leader's gossip; rest[0] is alive and answers.
	accused := node(rest[0])
	dead := accused
	delegate{leader}.NotifyLeave(&dead)
	time.Sleep(2 * time.Second)
	if e, n := epochNodes(leader); e != 1 || n != 3 {
		t.Fatalf("epoch %d with %d nodes 2 s after a false death, want epoch 1 with 3", e, n)
	}
	delegate{leader}.NotifyJoin(&accused) // its refutation
	time.Sleep(leaveGrace)
	if e, n := epochNodes(leader); e != 1 || n != 3 {
		t.Fatalf("epoch %d with %d nodes after the refutation, want epoch 1 with 3", e, n)
	}
	// A real death: the peer stops; the leave is committed soon.
	gone := node(rest[1])
	leader.noticeMu.Lock()
	goneMeta := leader.members[gone.Name]
	leader.noticeMu.Unlock()
	rest[1].crash()
	start := time.Now()
	waitFor(t, "the epoch without the crashed node", func() bool { e, n := epochNodes(leader); return e == 2 && n == 2 })
	t.Logf("crashed node left the epochs %v after the crash", time.Since(start).Round(time.Millisecond))
	// A peer held while its first ping is under way only keeps a place
	// it has: held once out of the epochs (as after an epoch forced
	// without it before gossip reported it), it does not join them.
	leader.noticeMu.Lock()
	leader.left[gone.Name] = &leftPeer{meta: goneMeta, addr: gone.Address(), at: time.Now()} // not checked yet
	leader.noticeMu.Unlock()
	leader.poke()
	time.Sleep(time.Second)
	if e, n := epochNodes(leader); e != 2 || n != 2 {
		t.Fatalf("epoch %d with %d nodes after a node out of the epochs was reported dead, want epoch 2 with 2", e, n)
	}
}

// A bootstrapping node names its cluster before it gossips, and a new
// node takes the name of the node it joined through as soon as it has
// joined, so that no node of a running cluster is ever without an
// identity (one without conflicts with nobody, and another cluster could
// take it in). The name the leader commits is that one.
func TestIdentityFromTheStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	ds := startDrivers(t, 3)
	id := ds[0].Identity().ClusterID
	if id == "" {
		t.Fatal("the bootstrapping node has no cluster id when Open returns")
	}
	for i, d := range ds[1:] {
		if got := d.Identity().ClusterID; got != id {
			t.Fatalf("node %d: cluster id %q when Open returns, want %q", i+1, got, id)
		}
	}
	waitFor(t, "the cluster named in the log", func() bool {
		var named string
		ds[2].View(func(s *cluster.State) { named = s.ClusterID })
		return named != ""
	})
	var named string
	ds[2].View(func(s *cluster.State) { named = s.ClusterID })
	if named != id {
		t.Fatalf("the log names the cluster %q, gossip %q", named, id)
	}
}
