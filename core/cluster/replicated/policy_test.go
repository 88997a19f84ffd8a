package replicated

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
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
