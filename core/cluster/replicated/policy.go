package replicated

import (
	"slices"

	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// VoterCount is how many of n live nodes vote: an odd number (an even one
// tolerates no more failures than the odd one below it, and makes a split
// down the middle leaderless), at most max.
func VoterCount(n, max int) int {
	v := min(n, max)
	if v > 0 && v%2 == 0 {
		v--
	}
	return v
}

// ConfigAction is one change of raft's configuration.
type ConfigAction struct {
	Op   ConfigOp
	ID   raft.ServerID
	Addr raft.ServerAddress
}

// ConfigOp says what a ConfigAction does.
type ConfigOp uint8

// Configuration changes, applied in the order Voters returns them.
const (
	OpRemove      ConfigOp = iota + 1 // a server not alive any more
	OpAddVoter                        // add, or promote a non-voter
	OpAddNonvoter                     // add a live node that will not vote
	OpDemote                          // a voter beyond VoterCount
)

// Voters is the voter policy, a pure function of the current
// configuration and the live members (id → raft address): the dead leave
// the configuration, every live node is in it, and VoterCount(live) of
// them vote. Voters that are alive keep their vote (no churn), self (the
// leader applying the plan) always votes, and the others are chosen in id
// order.
func Voters(current []raft.Server, live map[raft.ServerID]raft.ServerAddress, self raft.ServerID, maxVoters int) []ConfigAction {
	var out []ConfigAction
	suffrage := map[raft.ServerID]raft.ServerSuffrage{}
	voters := 0
	for _, s := range current {
		if _, ok := live[s.ID]; !ok && s.ID != self {
			out = append(out, ConfigAction{Op: OpRemove, ID: s.ID})
			continue
		}
		suffrage[s.ID] = s.Suffrage
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	n := len(live)
	if _, ok := live[self]; !ok {
		n++
	}
	want := VoterCount(n, maxVoters)
	ids := make([]raft.ServerID, 0, len(live))
	for id := range live {
		if id != self {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		suf, in := suffrage[id]
		if in && suf == raft.Voter {
			continue
		}
		if voters < want {
			out = append(out, ConfigAction{Op: OpAddVoter, ID: id, Addr: live[id]})
			voters++
		} else if !in {
			out = append(out, ConfigAction{Op: OpAddNonvoter, ID: id, Addr: live[id]})
		}
	}
	for i := len(ids) - 1; i >= 0 && voters > want; i-- {
		if suf, in := suffrage[ids[i]]; in && suf == raft.Voter {
			out = append(out, ConfigAction{Op: OpDemote, ID: ids[i]})
			voters--
		}
	}
	return out
}

// NextMembers is the node list of the next epoch: cur, the current
// epoch's nodes, with the first of changes applied (cluster.PendingChanges
// order), so that changes noticed together still get an epoch each; or,
// when gathered, with every change applied at once. It returns the nodes
// and how many changes they take in (0: no epoch to commit).
//
// gathered is a cluster leaving the wait of a whole-cluster restart: every
// node of its last epoch is back. Sheepdog's cluster then starts with one
// epoch of every node that joined during the wait (its SD_STATUS_WAIT
// collects them without epochs), not one epoch per node in the order they
// came back.
func NextMembers(cur []proto.Node, changes []cluster.Change, gathered bool) ([]proto.Node, int) {
	if len(changes) == 0 {
		return cur, 0
	}
	if !gathered {
		return changes[0].Apply(cur), 1
	}
	nodes := cur
	for _, c := range changes {
		nodes = c.Apply(nodes)
	}
	return nodes, len(changes)
}

// AutoRecover decides whether this node (self), without a raft leader,
// re-forms its cluster by itself, as `cluster recover force` would: only
// where the cluster driver can tell a dead sheep from a silent one
// (Config.Dead: -c local, every sheep on one host, a process that is gone
// is a fact). servers is raft's configuration as this node knows it, live
// the servers gossip sees alive (this node among them), dead those known
// gone for good.
//
// Invariants kept here:
//   - Never while a majority of the voters may be alive: a voter that is
//     not live is only discounted when it is dead, so a partition (a voter
//     silent but not known dead) always leaves the decision to raft or
//     the operator.
//   - At most one survivor re-forms: the one with the lowest id among
//     the configuration's servers that are live and not dead. Every
//     survivor computes the same choice from the same configuration and
//     the same host-local facts; the others see its newer generation and
//     rejoin it (rejoinIfLeftBehind).
func AutoRecover(servers []raft.Server, live, dead map[raft.ServerID]bool, self raft.ServerID) bool {
	voters, alive := 0, 0
	var first raft.ServerID
	in := false
	for _, s := range servers {
		up := live[s.ID] && !dead[s.ID]
		if s.Suffrage == raft.Voter {
			voters++
			if up {
				alive++
			} else if !dead[s.ID] {
				return false // silent, not known dead: maybe a partition
			}
		}
		if s.ID == self {
			in = true
		}
		if up && (first == "" || s.ID < first) {
			first = s.ID
		}
	}
	return in && alive*2 <= voters && first == self
}

// RejoinNewer says when a node that sees a live peer of its cluster with a
// newer generation drops its raft log to rejoin that peer's cluster. Such
// a peer re-formed the cluster (recover force) while this node was cut
// off or down, so this node's log is of a cluster that is no more.
//
//   - Without a leader (leaderless: none for NoLeaderWait), always: this
//     node can commit nothing, and the peer's cluster goes on.
//   - With a leader only where dead sheeps are known as such (local: -c
//     local) and this node waits for the nodes of its last epoch after a
//     restart (waiting): it has committed nothing since it started, so
//     nothing is lost, and the newer history decides, as in Sheepdog
//     (the latest epoch wins). A node restarted alone before the
//     survivors that re-formed the cluster elects itself when it was the
//     only voter; without this it would lead a second history.
//   - Otherwise never: a leader that has gone on committing holds writes
//     that exist nowhere else (split brain, logged by warnSplitBrain).
func RejoinNewer(leaderless, local, waiting bool) bool {
	return leaderless || (local && waiting)
}

// Adopt says whether a node of identity mine joins the cluster of a peer
// of identity peer that gossip refused (-c local only): when mine was never
// formatted (no ctime: no VDI, no data) and peer's was. A formatted node
// never gives up its cluster for another, and two unformatted ones keep
// apart, as across hosts (Identity.Conflicts).
func Adopt(mine, peer Identity) bool {
	return mine.Ctime == 0 && peer.Ctime != 0 && mine.Conflicts(peer) != ""
}
