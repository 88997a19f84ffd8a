// Package replicated is the cluster driver of a multi-node sheep:
// hashicorp/raft orders cluster entries (core/cluster.Entry) into the same
// State on every node, and hashicorp/memberlist tells who is alive. The
// raft leader turns every change of the live set into its own epoch, in
// the order gossip reported them (cluster.PendingChanges).
//
// Quorum rules: while a majority of raft voters is alive the cluster goes
// on by itself. Without one, reads of local copies go on (Sync answers from
// the local state), writes wait for a leader (Quorum) and `cluster recover
// force` re-forms the cluster from the survivors (ForceRecover, raft's
// RecoverCluster). Where the missing voters are known dead (Config.Dead,
// -c local), one survivor does that by itself (AutoRecover). A node whose log was left behind by such a re-forming
// (an older State.Generation than its peers', and no leader of its own)
// drops its raft state and rejoins the new cluster as a fresh member; its
// copies are then set aside by recovery as any returning node's.
//
// Partitions heal by themselves: every node keeps trying to reach the
// nodes of its recent epochs that gossip lost (rejoin.go), so a node cut
// off and declared dead is back in an epoch of its own once it can reach
// the others; until then, while its state shows an epoch without it, it
// is Outside. OnPeer tells the peer connections who is down, so requests
// waiting on a silent peer fail over at once.
//
// One cluster per gossip pool: every node gossips its cluster's identity
// (the id chosen at bootstrap, the format's ctime) and refuses, with a log
// line, peers of another cluster (meta.go).
package replicated

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Port offsets: by default a sheep on protocol port P gossips on
// P+GossipOffset (TCP and UDP) and runs raft on P+RaftOffset, so several
// sheeps share a host with only -p and the dir changed. Where that passes
// 65535 the offset is subtracted instead (DefaultGossipPort,
// DefaultRaftPort), so that every valid protocol port has defaults.
const (
	GossipOffset = 10000
	RaftOffset   = 20000
)

// DefaultGossipPort is the gossip port of a sheep on protocol port p that
// was given none: p+GossipOffset, or p-GossipOffset when that would pass
// 65535. Joining nodes derive a seed's gossip port with it.
func DefaultGossipPort(p int) int {
	if p+GossipOffset > 65535 {
		return p - GossipOffset
	}
	return p + GossipOffset
}

// DefaultRaftPort is the raft port of a sheep on protocol port p that was
// given none: p+RaftOffset, or p-RaftOffset when that would pass 65535.
// (Peers learn a node's raft port from its gossip, never derive it.)
func DefaultRaftPort(p int) int {
	if p+RaftOffset > 65535 {
		return p - RaftOffset
	}
	return p + RaftOffset
}

// ForwardFunc sends an encoded entry to the leader (known by its protocol
// address) and returns the result and the log index it was applied at.
type ForwardFunc func(ctx context.Context, leader string, entry []byte) (proto.Result, uint64, error)

// Config configures the driver. DefaultConfig fills the timings; Dir,
// Self, BindAddr and Log must be set.
type Config struct {
	Dir      string     // the store dir: raft's state goes to Dir/raft
	Self     proto.Node // this node as it is gossiped
	BindAddr string     // interface to bind gossip and raft to
	// GossipPort and RaftPort are where gossip (TCP and UDP) and raft
	// listen; 0 means DefaultGossipPort / DefaultRaftPort of Self.Port.
	// Other nodes join this one through its gossip port as
	// DefaultGossipPort derives it (or through GossipSeeds), so with --join
	// a node with another gossip port is reached through a seed on the
	// default one.
	GossipPort int
	RaftPort   int
	// Join lists protocol addresses of running sheeps. A node given Join
	// never bootstraps a cluster of its own.
	Join []string
	// GossipSeeds, when set, are the gossip addresses (HOST:PORT) to join
	// through instead of those DefaultGossipPort derives from Join: for
	// seeds whose gossip port is known (-c local's registry records it).
	GossipSeeds []string
	Forward     ForwardFunc
	// OnApply runs after every applied entry, outside the state lock, for
	// side effects local to this node (wiping the store on format).
	OnApply func(e *cluster.Entry, res proto.Result)
	// OnRestore runs after the state was replaced by a snapshot (from the
	// leader, or at start): entries it holds never went through OnApply.
	OnRestore func()
	// OnPeer runs when a peer (by protocol address) is found down —
	// failure detection declared it dead, or an applied epoch removed it —
	// or up again (gossip sees it alive, an epoch adds it): peer I/O
	// fails over from a down peer at once (gateway.Peers). It must not
	// block: it runs inside gossip's and raft's callbacks.
	OnPeer func(addr string, alive bool)
	// Dead, when set, reports whether the sheep at a protocol address is
	// gone for good, not merely silent: -c local's registry, where every
	// sheep runs on this host and a process that no longer exists is a
	// fact. With it, survivors left without a majority of raft voters
	// re-form the cluster by themselves once every missing voter is dead
	// (AutoRecover), as Sheepdog's local driver carries on. Unset (sheeps
	// on several hosts, where a dead peer and a partition look alike),
	// that stays the operator's call: `cluster recover force`.
	Dead func(addr string) bool
	Log  *slog.Logger

	// With a cluster key: GossipKey (32 bytes) encrypts and signs every
	// gossip message, and raft's connections are mutual TLS with
	// RaftServerTLS (accepting) and RaftClientTLS (dialling). Unset:
	// plain gossip and raft, as without a key.
	GossipKey                    []byte
	RaftServerTLS, RaftClientTLS *tls.Config

	// Raft timings (hashicorp/raft's Config fields of the same names).
	// CommitTimeout is also the period of the leader's AppendEntries to
	// each follower when nothing is proposed (raft sends one at every
	// expiry, empty or not): at 5 ms an idle 3-node cluster's leader spent
	// 16% of a CPU and each follower 7% on them. Followers learn a new
	// commit index at once anyway: the leader nudges them after each
	// command (Driver.nudge).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	// TrailingLogs is how many entries raft keeps in its log behind a
	// snapshot (raft's default, 10240, when zero), for a follower that
	// fell behind by fewer to catch up from the log; one further behind
	// installs the snapshot, a few KiB. The log comes out of the store
	// filesystem: at a few hundred bytes an entry, 1024 is under 1 MiB.
	TrailingLogs uint64
	// SnapshotInterval is how often raft checks whether the log has grown
	// by SnapshotThreshold entries since the last snapshot (raft's default
	// when zero).
	SnapshotInterval time.Duration

	// Gossip timings (hashicorp/memberlist's Config fields). Failure
	// detection takes about ProbeInterval × (1 + SuspicionMult×log10(n))
	// once another node confirms the suspicion, and up to
	// SuspicionMaxMult times that suspicion timeout while none does
	// (memberlist's Lifeguard: SuspicionMult - 2 confirmations are
	// expected, so at 2 a suspicion never waits for one, and a node that
	// hears nothing, cut off one way, makes the healthy ones it suspects
	// leave unless they refute within the minimum).
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	SuspicionMult    int
	SuspicionMaxMult int
	GossipInterval   time.Duration
	PushPullInterval time.Duration

	// MaxVoters caps the raft voters (see Voters).
	MaxVoters int
	// JoinRetry is how long an explicit Join keeps trying its peers.
	JoinRetry time.Duration
	// ReconnectInterval is how often a node tries to reach the nodes of
	// its recent epochs that gossip lost (a healed partition), rejoin.go.
	ReconnectInterval time.Duration
	// NoLeaderWait is how long Sync and ForceRecover wait for a leader
	// before deciding there is none (no quorum).
	NoLeaderWait time.Duration
	// ProposeTimeout bounds one Propose, forwarding and retries included.
	ProposeTimeout time.Duration
	// LogRate caps the lines per second raft and memberlist log through
	// Log (the excess is counted and reported).
	LogRate int
}

// DefaultConfig returns the timings sheep runs with: failure detection in
// about 2 s on a LAN, leader election in about a second.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  1024,
		TrailingLogs:       1024,
		ProbeInterval:      500 * time.Millisecond,
		ProbeTimeout:       250 * time.Millisecond,
		SuspicionMult:      3,
		SuspicionMaxMult:   2,
		GossipInterval:     100 * time.Millisecond,
		PushPullInterval:   5 * time.Second,
		MaxVoters:          5,
		JoinRetry:          15 * time.Second,
		ReconnectInterval:  time.Second,
		NoLeaderWait:       time.Second,
		ProposeTimeout:     20 * time.Second,
		LogRate:            20,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("no dir"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("no logger"))
	}
	if c.Self.Port == 0 {
		errs = append(errs, errors.New("no protocol port"))
	}
	g, r := c.gossipPort(), c.raftPort()
	for _, p := range []struct {
		name string
		v    int
	}{{"gossip", g}, {"raft", r}} {
		if p.v < 1 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s port %d: must be between 1 and 65535", p.name, p.v))
		}
	}
	if g == r || g == int(c.Self.Port) || r == int(c.Self.Port) {
		errs = append(errs, fmt.Errorf("ports %d (protocol), %d (gossip) and %d (raft) must differ", c.Self.Port, g, r))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat timeout", c.HeartbeatTimeout}, {"election timeout", c.ElectionTimeout}, {"leader lease timeout", c.LeaderLeaseTimeout},
		{"commit timeout", c.CommitTimeout}, {"probe interval", c.ProbeInterval}, {"probe timeout", c.ProbeTimeout},
		{"gossip interval", c.GossipInterval}, {"push/pull interval", c.PushPullInterval}, {"join retry", c.JoinRetry},
		{"reconnect interval", c.ReconnectInterval},
		{"no-leader wait", c.NoLeaderWait}, {"propose timeout", c.ProposeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("leader lease timeout %v above the heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		errs = append(errs, fmt.Errorf("probe timeout %v not below the probe interval %v", c.ProbeTimeout, c.ProbeInterval))
	}
	if c.SuspicionMult < 1 {
		errs = append(errs, fmt.Errorf("suspicion multiplier %d: must be at least 1", c.SuspicionMult))
	}
	if c.MaxVoters < 1 {
		errs = append(errs, fmt.Errorf("max voters %d: must be at least 1", c.MaxVoters))
	}
	if c.SnapshotThreshold == 0 {
		errs = append(errs, errors.New("snapshot threshold 0"))
	}
	if c.LogRate < 1 {
		errs = append(errs, fmt.Errorf("log rate %d: must be at least 1", c.LogRate))
	}
	return errors.Join(errs...)
}

// gossipPort is the port gossip listens on (GossipPort or its default).
func (c *Config) gossipPort() int {
	if c.GossipPort != 0 {
		return c.GossipPort
	}
	return DefaultGossipPort(int(c.Self.Port))
}

// raftPort is the port raft listens on (RaftPort or its default).
func (c *Config) raftPort() int {
	if c.RaftPort != 0 {
		return c.RaftPort
	}
	return DefaultRaftPort(int(c.Self.Port))
}
