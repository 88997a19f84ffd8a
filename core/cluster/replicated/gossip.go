package replicated

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

const identityFile = "identity.json"

func loadIdentity(dir string) Identity {
	var id Identity
	if b, err := os.ReadFile(filepath.Join(dir, identityFile)); err == nil {
		json.Unmarshal(b, &id)
	}
	return id
}

// syncIdentity takes the identity from the state once it has one (an
// empty state, before replay or after a rejoin, keeps the last known),
// persists it and re-gossips it when it changed.
//
// Invariant: the generation of one cluster id never goes back. A node
// restarted from a snapshot taken before its last forced epoch (raft's
// RecoverCluster snapshots first) holds that epoch in its log only until
// a leader commits it; gossiping the snapshot's older generation
// meanwhile would make it look like a node left behind, and the node of
// the older history it meets at a restart would not yield to it
// (RejoinNewer), or it would yield itself.
func (d *Driver) syncIdentity() {
	var id Identity
	d.View(func(s *cluster.State) {
		id = Identity{ClusterID: s.ClusterID, Ctime: s.Ctime, Generation: s.Generation}
	})
	if id.ClusterID == "" && id.Ctime == 0 {
		return
	}
	if cur := d.Identity(); cur.ClusterID == id.ClusterID && cur.Generation > id.Generation {
		id.Generation = cur.Generation
	}
	d.setIdentity(id)
}

// setIdentity makes id this node's identity: persisted, and gossiped when
// it changed.
func (d *Driver) setIdentity(id Identity) {
	if cur := d.ident.Load(); cur != nil && *cur == id {
		return
	}
	d.ident.Store(&id)
	if b, err := json.Marshal(id); err == nil {
		if err := cluster.WriteFileSync(filepath.Join(d.raftDir(), identityFile), b); err != nil {
			d.cfg.Log.Warn("record the cluster identity", "err", err)
		}
	}
	if d.ml != nil {
		go d.ml.UpdateNode(time.Second)
	}
}

// newClusterID returns a new random cluster id.
func newClusterID() string {
	id := make([]byte, 16)
	rand.Read(id)
	return hex.EncodeToString(id)
}

// adoptJoined gives a new node (no raft state, no identity) the identity
// of the first of the gossip addresses it joined through that has one,
// until the cluster's log reaches it (syncIdentity): from its first
// moments in the cluster it conflicts with the nodes of other clusters,
// as its peers do.
func (d *Driver) adoptJoined(peers []string) {
	if id := d.joinedIdentity(peers); id != (Identity{}) {
		d.setIdentity(id)
	}
}

// joinedIdentity is the identity of the first of peers (gossip
// addresses) that gossips one; zero if none does.
func (d *Driver) joinedIdentity(peers []string) Identity {
	d.noticeMu.Lock()
	defer d.noticeMu.Unlock()
	for _, p := range peers {
		for name, addr := range d.gossipAddr {
			if m, ok := d.members[name]; ok && addr == p && m.Identity != (Identity{}) {
				return m.Identity
			}
		}
	}
	return Identity{}
}

// Identity is the cluster identity this node gossips.
func (d *Driver) Identity() Identity { return *d.ident.Load() }

func (d *Driver) startGossip() error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = d.cfg.Self.NodeID.String()
	mc.BindAddr = d.cfg.BindAddr
	mc.BindPort = d.cfg.gossipPort()
	mc.AdvertiseAddr = d.cfg.Self.IP().String()
	mc.AdvertisePort = mc.BindPort
	mc.ProbeInterval = d.cfg.ProbeInterval
	mc.ProbeTimeout = d.cfg.ProbeTimeout
	mc.SuspicionMult = d.cfg.SuspicionMult
	if d.cfg.SuspicionMaxMult > 0 {
		mc.SuspicionMaxTimeoutMult = d.cfg.SuspicionMaxMult
	}
	mc.GossipInterval = d.cfg.GossipInterval
	mc.PushPullInterval = d.cfg.PushPullInterval
	mc.LogOutput = nil
	// Our gossip messages are pings, acks and a few hundred bytes of
	// metadata: LZW would save little, and memberlist makes a compressor
	// of 72 KB for every message it sends (a sheep's largest allocations
	// while idle). Compressed messages of other nodes are still read.
	mc.EnableCompression = false
	mc.Logger = log.New(d.mlLog, "", 0)
	if len(d.cfg.GossipKey) > 0 {
		// Messages that do not decrypt with the key are dropped and
		// logged by memberlist: a node without the key never joins.
		mc.SecretKey = d.cfg.GossipKey
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	del := delegate{d}
	mc.Delegate, mc.Events, mc.Alive = del, del, del
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip on port %d: %w", mc.BindPort, err)
	}
	d.ml = ml
	return nil
}

type delegate struct{ d *Driver }

func (g delegate) NodeMeta(limit int) []byte {
	return meta{Node: g.d.self(), RaftPort: uint16(g.d.cfg.raftPort()), Identity: g.d.Identity()}.encode()
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// The event hooks run under memberlist's lock of its node table: only
// there may a node's Meta be read (memberlist rewrites it in place), so
// they keep the decoded copy Members uses.

func (g delegate) NotifyJoin(n *memberlist.Node) {
	g.d.noticeMu.Lock()
	delete(g.d.left, n.Name)
	g.d.noticeMu.Unlock()
	g.d.setMember(n)
	g.d.notice(n.Name)
	g.d.cfg.Log.Info("gossip: node joined", "node", n.Name)
	g.d.peer(n.Name, true)
	g.d.poke()
}

func (g delegate) NotifyLeave(n *memberlist.Node) {
	g.d.noticeMu.Lock()
	// (n.State says nothing here: memberlist keeps the state beside the
	// Node it passes, so a dead node and one that left cleanly look
	// alike. One that left cleanly stops answering as it exits.)
	if m, ok := g.d.members[n.Name]; ok {
		lp := &leftPeer{meta: m, addr: n.Address(), at: time.Now()}
		g.d.left[n.Name] = lp
		go g.d.checkLeft(n.Name, lp)
	}
	delete(g.d.members, n.Name)
	g.d.noticeMu.Unlock()
	g.d.notice(n.Name)
	g.d.cfg.Log.Info("gossip: node left", "node", n.Name)
	g.d.peer(n.Name, false)
	g.d.poke()
}

// peer reports a peer's liveness to OnPeer (not this node's own).
func (d *Driver) peer(name string, alive bool) {
	if d.cfg.OnPeer != nil && name != d.cfg.Self.NodeID.String() {
		d.cfg.OnPeer(name, alive)
	}
}

func (g delegate) NotifyUpdate(n *memberlist.Node) {
	g.d.setMember(n)
	g.d.poke()
}

func (d *Driver) setMember(n *memberlist.Node) {
	if n.Name == d.cfg.Self.NodeID.String() {
		return // this node's meta is ours to make (liveMetas)
	}
	m, err := decodeMeta(n.Meta)
	d.noticeMu.Lock()
	defer d.noticeMu.Unlock()
	d.gossipAddr[n.Name] = n.Address()
	if err != nil {
		delete(d.members, n.Name)
		return
	}
	d.members[n.Name] = m
}

// NotifyAlive refuses peers of another cluster (Identity.Conflicts), and
// says so in the log, at most every 10 s per peer. The peer refuses this
// node the same way, and logs it on its side. With -c local, a node of an
// unformatted cluster notes a formatted peer it refused: it joins that
// peer's cluster next (adoptFormatted).
func (g delegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == g.d.cfg.Self.NodeID.String() {
		return nil
	}
	m, err := decodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	mine := g.d.Identity()
	if why := mine.Conflicts(m.Identity); why != "" {
		g.d.noticeMu.Lock()
		if g.d.cfg.Dead != nil && Adopt(mine, m.Identity) {
			g.d.adopt = &adoption{id: m.Identity, peer: peer.Name, addr: peer.Address()}
			g.d.poke()
		}
		last := g.d.refused[peer.Name]
		logIt := time.Since(last) > 10*time.Second
		if logIt {
			g.d.refused[peer.Name] = time.Now()
		}
		g.d.noticeMu.Unlock()
		if logIt {
			g.d.cfg.Log.Warn("refusing gossip peer: it belongs to another cluster", "peer", peer.Name, "why", why)
		}
		return fmt.Errorf("node %s belongs to another cluster (%s)", peer.Name, why)
	}
	return nil
}

func (d *Driver) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// notice records that gossip reported a change of node name now.
func (d *Driver) notice(name string) {
	d.noticeMu.Lock()
	d.seq++
	d.noticed[name] = d.seq
	d.noticeMu.Unlock()
}

func (d *Driver) noticedSeq(id proto.NodeID) int64 {
	d.noticeMu.Lock()
	defer d.noticeMu.Unlock()
	return d.noticed[id.String()]
}

// liveMetas returns the metadata of the live members gossip accepted,
// this node first.
func (d *Driver) liveMetas() []meta {
	out := []meta{{Node: d.self(), RaftPort: uint16(d.cfg.raftPort()), Identity: d.Identity()}}
	d.noticeMu.Lock()
	defer d.noticeMu.Unlock()
	for _, m := range d.members {
		out = append(out, m)
	}
	return out
}

// Members implements cluster.Membership: the live members as gossip sees
// them now, in node order. This is not the membership the cluster decided
// (the current epoch's node list), which follows it one change at a time.
func (d *Driver) Members() []proto.Node {
	var out []proto.Node
	for _, m := range d.liveMetas() {
		out = append(out, m.Node)
	}
	slices.SortFunc(out, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	return out
}

// leaveGrace bounds how long a peer that gossip reports dead, but that
// answers this node's own ping, stays in the epochs and raft voters this
// node (the leader) makes (held).
const leaveGrace = 5 * time.Second

// leftPeer is a peer gossip reported dead, in Driver.left while the
// first ping to it is under way or it answers them (checkLeft).
type leftPeer struct {
	meta     meta
	addr     string    // its gossip address
	at       time.Time // when gossip reported it dead
	answered bool      // a ping was answered (logged once)
}

// checkLeft pings the peer name, reported dead by gossip, every
// ProbeInterval until it fails to answer, is alive in gossip again, or
// leaveGrace has passed, and pokes the reconciler after each answer.
//
// Why: gossip can declare a healthy node dead on the word of a third
// node that hears nothing. A node cut off inbound suspects everyone; its
// suspicion of a peer can start after the others have declared it dead,
// and then it reaches them only as its "dead" broadcast, which they
// accept at once, before the accused node has refuted anything. The
// accused refutes within a gossip round or two and is alive again; an
// epoch for its leave and another for its return, with a recovery each,
// would be for nothing (TestPartitionOneWay). A node really gone does
// not answer: its leave waits ProbeTimeout more.
func (d *Driver) checkLeft(name string, lp *leftPeer) {
	addr, err := net.ResolveUDPAddr("udp", lp.addr)
	for err == nil && time.Since(lp.at) < leaveGrace && !d.stopping.Load() {
		_, err = d.ml.Ping(name, addr)
		d.noticeMu.Lock()
		mine := d.left[name] == lp
		first := mine && err == nil && !lp.answered
		if first {
			lp.answered = true
		}
		d.noticeMu.Unlock()
		if !mine {
			return // alive in gossip again, or reported dead anew
		}
		if err != nil {
			break
		}
		if first {
			d.cfg.Log.Info("gossip reports a peer dead that answers this node: keeping it in the epochs while it refutes", "node", name, "for_at_most", leaveGrace)
		}
		d.poke()
		time.Sleep(d.cfg.ProbeInterval)
	}
	// No answer, or leaveGrace is over: it leaves.
	d.noticeMu.Lock()
	if d.left[name] == lp {
		delete(d.left, name)
	}
	d.noticeMu.Unlock()
	d.poke()
}

// held returns the metadata of the peers gossip reported dead that this
// node still counts as members: within leaveGrace of the report, while
// the first ping is under way or every one so far was answered
// (checkLeft removes the others from left).
func (d *Driver) held() []meta {
	d.noticeMu.Lock()
	defer d.noticeMu.Unlock()
	var out []meta
	for _, lp := range d.left {
		if time.Since(lp.at) < leaveGrace {
			out = append(out, lp.meta)
		}
	}
	return out
}

// liveServers maps the live members, and those held that are servers
// of raft's configuration now, to their raft addresses. (A held peer
// only keeps its place: it is never added.)
func (d *Driver) liveServers(servers []raft.Server) map[raft.ServerID]raft.ServerAddress {
	live := map[raft.ServerID]raft.ServerAddress{}
	add := func(m meta) {
		live[raft.ServerID(m.Node.NodeID.String())] = raft.ServerAddress(net.JoinHostPort(m.Node.IP().String(), strconv.Itoa(int(m.RaftPort))))
	}
	for _, m := range d.liveMetas() {
		add(m)
	}
	for _, m := range d.held() {
		id := raft.ServerID(m.Node.NodeID.String())
		if slices.ContainsFunc(servers, func(s raft.Server) bool { return s.ID == id }) {
			add(m)
		}
	}
	return live
}

// newerGeneration returns the highest generation among live peers of this
// cluster when it is newer than this node's, and one such peer.
func (d *Driver) newerGeneration() (uint32, string) {
	mine := d.Identity()
	var gen uint32
	var peer string
	for _, m := range d.liveMetas() {
		if m.Node.NodeID == d.cfg.Self.NodeID || mine.Conflicts(m.Identity) != "" {
			continue
		}
		if m.Generation > mine.Generation && m.Generation > gen {
			gen, peer = m.Generation, m.Node.NodeID.String()
		}
	}
	return gen, peer
}

// olderGeneration returns a live peer of this cluster of an older
// generation than this node's, or "". A node that knows no cluster yet
// (the zero Identity) holds no history and is none.
func (d *Driver) olderGeneration() string {
	mine := d.Identity()
	for _, m := range d.liveMetas() {
		if m.Node.NodeID != d.cfg.Self.NodeID && m.Identity != (Identity{}) && mine.Conflicts(m.Identity) == "" && m.Generation < mine.Generation {
			return m.Node.NodeID.String()
		}
	}
	return ""
}

// olderYieldWait bounds how long a restarted node waits before it starts
// raft for live peers of an older generation of its cluster to drop their
// logs (waitOlderYield).
const olderYieldWait = 5 * time.Second

// waitOlderYield runs before a restarted node starts raft where dead
// sheeps are known (-c local): a live peer of an older generation that
// waits after its own restart drops its log once it sees this node
// (RejoinNewer). Until it has, its raft may still lead the old history
// and would replicate that to this node's raft as soon as it listens:
// two histories of one cluster must never exchange raft messages.
func (d *Driver) waitOlderYield() {
	deadline := time.Now().Add(olderYieldWait)
	for {
		peer := d.olderGeneration()
		if peer == "" {
			return
		}
		if time.Now().After(deadline) {
			d.cfg.Log.Warn("a node of an older generation of this cluster has not rejoined it: starting raft anyway", "peer", peer)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
