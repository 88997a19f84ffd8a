package replicated

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestVoterCount(t *testing.T) {
	for n, want := range []int{0, 1, 1, 3, 3, 5, 5, 5, 5} {
		if got := VoterCount(n, 5); got != want {
			t.Errorf("VoterCount(%d) = %d, want %d", n, got, want)
		}
	}
}

func servers(spec string) []raft.Server {
	// "a:v b:n" — id and suffrage
	var out []raft.Server
	for i := 0; i+2 < len(spec)+1; i += 4 {
		s := raft.Server{ID: raft.ServerID(spec[i : i+1]), Suffrage: raft.Voter}
		if spec[i+2] == 'n' {
			s.Suffrage = raft.Nonvoter
		}
		out = append(out, s)
	}
	return out
}

func liveSet(ids string) map[raft.ServerID]raft.ServerAddress {
	m := map[raft.ServerID]raft.ServerAddress{}
	for _, c := range ids {
		m[raft.ServerID(string(c))] = raft.ServerAddress("addr-" + string(c))
	}
	return m
}

func TestVoters(t *testing.T) {
	for _, tc := range []struct {
		name, current, live string
		want                []string
	}{
		{"second node waits as a non-voter", "a:v", "ab", []string{"+n b"}},
		{"third node makes three voters", "a:v b:n", "abc", []string{"+v b", "+v c"}},
		{"fourth node does not vote", "a:v b:v c:v", "abcd", []string{"+n d"}},
		{"two of five die at once: removed, the rest vote", "a:v b:v c:v d:v e:v", "abc", []string{"- d", "- e"}},
		{"down to two: one voter", "a:v b:v c:v", "ab", []string{"- c", "demote b"}},
		{"a dead voter is replaced by a live non-voter", "a:v b:v c:v d:n", "abd", []string{"- c", "+v d"}},
		{"old even policy trimmed", "a:v b:v c:v d:v", "abcd", []string{"demote d"}},
		{"nothing to do", "a:v b:v c:v d:n", "abcd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range Voters(servers(tc.current), liveSet(tc.live), "a", 5) {
				got = append(got, map[ConfigOp]string{OpRemove: "-", OpAddVoter: "+v", OpAddNonvoter: "+n", OpDemote: "demote"}[a.Op]+" "+string(a.ID))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Voters(%s, live %s) = %s, want %s", tc.current, tc.live, fmt.Sprint(got), fmt.Sprint(tc.want))
			}
		})
	}
}

func TestNextMembers(t *testing.T) {
	node := func(port uint16) proto.Node {
		return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)), NrVnodes: 128}
	}
	nodes := func(ports ...uint16) []proto.Node {
		var out []proto.Node
		for _, p := range ports {
			out = append(out, node(p))
		}
		return out
	}
	join := func(p uint16) cluster.Change { return cluster.Change{Node: node(p), Join: true} }
	leave := func(p uint16) cluster.Change { return cluster.Change{Node: node(p)} }
	for _, tc := range []struct {
		name     string
		cur      []proto.Node
		changes  []cluster.Change
		gathered bool
		want     []proto.Node
		taken    int
	}{
		{"no change", nodes(7000), nil, false, nodes(7000), 0},
		{"no change, gathered", nodes(7000), nil, true, nodes(7000), 0},
		{"one join", nodes(7000), []cluster.Change{join(7001)}, false, nodes(7000, 7001), 1},
		{"two changes, the first only", nodes(7000, 7001), []cluster.Change{leave(7001), join(7002)}, false, nodes(7000), 1},
		// Sheepdog's 001: the last epoch [7002] is back, 7000 and 7001
		// came back first: one epoch of the three.
		{"restart gathered", nodes(7002), []cluster.Change{join(7000), join(7001)}, true, nodes(7000, 7001, 7002), 2},
		{"restart gathered, one gone meanwhile", nodes(7000, 7001), []cluster.Change{leave(7001), join(7002)}, true, nodes(7000, 7002), 2},
	} {
		got, n := NextMembers(tc.cur, tc.changes, tc.gathered)
		if n != tc.taken || !slices.EqualFunc(got, tc.want, func(a, b proto.Node) bool { return a.NodeID == b.NodeID }) {
			t.Errorf("%s: NextMembers = %v (%d changes), want %v (%d)", tc.name, got, n, tc.want, tc.taken)
		}
	}
}

func TestAutoRecover(t *testing.T) {
	set := func(ids string) map[raft.ServerID]bool {
		m := map[raft.ServerID]bool{}
		for _, c := range ids {
			m[raft.ServerID(string(c))] = true
		}
		return m
	}
	for _, tc := range []struct {
		name       string
		servers    string // id:suffrage, as servers()
		live, dead string
		self       raft.ServerID
		want       bool
	}{
		// Two nodes, one voter: the voter killed, the survivor goes on.
		{"only voter dead", "a:v b:n", "b", "a", "b", true},
		{"only voter silent, not known dead", "a:v b:n", "b", "", "b", false},
		{"voter alive", "a:v b:n", "ab", "", "b", false},
		// A process gone while gossip still has it alive: dead wins.
		{"voter dead, gossip not caught up", "a:v b:n", "ab", "a", "b", true},
		// Three voters: one dead leaves a majority, raft goes on.
		{"majority alive", "a:v b:v c:v", "bc", "a", "b", false},
		{"two of three dead", "a:v b:v c:v", "c", "ab", "c", true},
		{"two of three gone, one silent", "a:v b:v c:v", "c", "a", "c", false},
		// Several survivors: only the lowest id re-forms.
		{"lowest survivor re-forms", "a:v b:n c:n", "bc", "a", "b", true},
		{"other survivor waits", "a:v b:n c:n", "bc", "a", "c", false},
		{"lowest survivor is a dead non-voter", "a:v b:n c:n", "c", "ab", "c", true},
		// A node the configuration does not name has no say.
		{"self not in the configuration", "a:v b:n", "bc", "a", "c", false},
		// Five voters, three dead: two survivors are no majority.
		{"three of five dead", "a:v b:v c:v d:v e:v", "de", "abc", "d", true},
		{"two of five dead", "a:v b:v c:v d:v e:v", "cde", "ab", "c", false},
	} {
		if got := AutoRecover(servers(tc.servers), set(tc.live), set(tc.dead), tc.self); got != tc.want {
			t.Errorf("%s: AutoRecover = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRejoinNewer(t *testing.T) {
	for _, tc := range []struct {
		leaderless, local, waiting, want bool
	}{
		{true, false, false, true},  // no leader: the newer cluster goes on, this node rejoins it
		{true, true, false, true},   // likewise with -c local
		{false, false, true, false}, // a leader, across hosts: never (split brain is the operator's)
		{false, true, true, true},   // -c local, still waiting after a restart: nothing committed, the newer history wins
		{false, true, false, false}, // -c local, committing again: its writes exist nowhere else
		{false, false, false, false},
	} {
		if got := RejoinNewer(tc.leaderless, tc.local, tc.waiting); got != tc.want {
			t.Errorf("RejoinNewer(leaderless %v, local %v, waiting %v) = %v, want %v", tc.leaderless, tc.local, tc.waiting, got, tc.want)
		}
	}
}

func TestAdopt(t *testing.T) {
	fresh := Identity{ClusterID: "x"}
	formatted := Identity{ClusterID: "y", Ctime: 5}
	for _, tc := range []struct {
		name       string
		mine, peer Identity
		want       bool
	}{
		{"unformatted meets formatted", fresh, formatted, true},
		{"formatted never gives up its cluster", formatted, fresh, false},
		{"two formatted clusters", formatted, Identity{ClusterID: "z", Ctime: 6}, false},
		{"two unformatted clusters", fresh, Identity{ClusterID: "z"}, false},
		{"same cluster, no conflict", Identity{ClusterID: "y"}, formatted, false},
		{"no identity yet conflicts with none", Identity{}, formatted, false},
	} {
		if got := Adopt(tc.mine, tc.peer); got != tc.want {
			t.Errorf("%s: Adopt = %v, want %v", tc.name, got, tc.want)
		}
	}
}
