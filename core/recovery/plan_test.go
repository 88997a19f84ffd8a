package recovery

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Planner scenarios. Nodes are letters (A is 127.0.0.1:7000, B :7001, ...).
// Objects are named by capital words; each is a data oid chosen so that
// its placement matches the case's "where" rules, written "E:N" (in epoch
// E, node N is one of its targets) or "E:-N" (it is not).

type planCase struct {
	name     string
	epochs   []string // members per epoch, from epoch 1: "ABC"
	self     byte
	copies   int
	settled  uint32
	disabled bool
	objects  map[string]string // object → placement rules
	live     string            // objects this node holds: "X Y"
	stale    map[string]uint32 // objects set aside here → newest epoch
	remote   map[string]string // objects other members list → "AB"
	// remoteStale: the newest copy in the other members' stale areas,
	// object → "AB:5" (A and B hold a copy current in epoch 5)
	remoteStale map[string]string
	partial     bool // not every member answered
	asked       bool // remote given (the fetch phase); else nil
	want        wantPlan
}

// wantPlan is a Plan in names: Fetch maps each object to its sources in
// order ("AB", or "AB:5" for the stale copies of epoch 5), Unstale each
// object to its epoch. staleAt, when given, is the epoch each copy set
// aside is named by.
type wantPlan struct {
	stale   string
	staleAt map[string]uint32
	unstale map[string]uint32
	fetch   map[string]string
	drop    string
}

var planCases = []planCase{
	{
		name:   "first epoch after the format: nothing to settle, fetch what is placed here",
		epochs: []string{"AB"}, self: 'A', copies: 2,
		objects: map[string]string{"X": "1:A"},
		remote:  map[string]string{"X": "B"}, asked: true,
		want: wantPlan{fetch: map[string]string{"X": "B"}},
	},
	{
		name:   "join, the newcomer: its old copies go aside, it fetches what is now placed on it",
		epochs: []string{"AB", "ABC"}, self: 'C', copies: 2,
		objects: map[string]string{"X": "2:C", "L": "2:C", "Y": "2:-C"},
		live:    "L",
		remote:  map[string]string{"X": "AB", "L": "AB", "Y": "AB"}, asked: true,
		want: wantPlan{stale: "L", fetch: map[string]string{"X": "AB", "L": "AB"}},
	},
	{
		name:   "join, an old member: keeps what is still placed on it, drops (later) what moved away",
		epochs: []string{"ABC", "ABCD"}, self: 'A', copies: 2, settled: 1,
		objects: map[string]string{"K": "1:A 2:A", "M": "1:A 2:-A"},
		live:    "K M",
		remote:  map[string]string{"K": "B", "M": "B"}, asked: true,
		want: wantPlan{drop: "M"},
	},
	{
		name:   "leave: a survivor fetches what is now placed on it from the remaining holders",
		epochs: []string{"ABC", "AB"}, self: 'A', copies: 2, settled: 1,
		objects: map[string]string{"X": "1:-A 2:A", "K": "1:A 2:A"},
		live:    "K",
		remote:  map[string]string{"X": "B", "K": "B"}, asked: true,
		want: wantPlan{fetch: map[string]string{"X": "B"}},
	},
	{
		name:   "sources: a target of the epoch before ranks ahead of a leftover holder",
		epochs: []string{"ABCD", "ABCDE"}, self: 'E', copies: 2,
		objects: map[string]string{"X": "1:A 1:-C 2:E"},
		remote:  map[string]string{"X": "CA"}, asked: true,
		want: wantPlan{fetch: map[string]string{"X": "AC"}},
	},
	{
		name:   "return: every copy goes aside; the only copy comes back, the rest is fetched",
		epochs: []string{"ABC", "AB", "ABC"}, self: 'C', copies: 2, settled: 1,
		objects: map[string]string{"P": "3:C", "Q": "3:C", "R": "3:-C"},
		live:    "P Q R",
		remote:  map[string]string{"P": "A", "R": "AB"}, asked: true,
		want: wantPlan{stale: "P Q R", unstale: map[string]uint32{"Q": 1}, fetch: map[string]string{"P": "A"}},
	},
	// Sheepdog's test 028: A and B hold X (epochs 1-2), are replaced by C
	// and D one by one (3-5), X is rewritten on C and D, then A comes back
	// and C leaves (6-7). In epoch 7 nobody holds X live: A's copy missed
	// epochs 3-5, D's was no target in epoch 6 (so may have missed its
	// writes). The newest copy is D's (current in 5), on both nodes.
	{
		name:   "no live copy left, the newest stale copy is another member's: fetched from it at its epoch",
		epochs: []string{"AB", "ABC", "BC", "BCD", "CD", "ACD", "AD"}, self: 'A', copies: 2, settled: 2,
		objects:     map[string]string{"X": "1:A 2:A 5:D 6:-D 7:A 7:D"},
		live:        "X",
		remoteStale: map[string]string{"X": "D:5"}, asked: true,
		want: wantPlan{stale: "X", staleAt: map[string]uint32{"X": 2}, fetch: map[string]string{"X": "D:5"}},
	},
	{
		name:   "no live copy left, the newest stale copy is ours: put back, the older one elsewhere ignored",
		epochs: []string{"AB", "ABC", "BC", "BCD", "CD", "ACD", "AD"}, self: 'D', copies: 2, settled: 6,
		objects:     map[string]string{"X": "5:D 6:-D 7:A 7:D"},
		live:        "X",
		remoteStale: map[string]string{"X": "A:2"}, asked: true,
		want: wantPlan{stale: "X", staleAt: map[string]uint32{"X": 5}, unstale: map[string]uint32{"X": 5}},
	},
	{
		name:   "stale copies of the same epoch: ours is put back, nothing fetched",
		epochs: []string{"AB", "ABC"}, self: 'A', copies: 2, settled: 2,
		objects:     map[string]string{"X": "2:A"},
		stale:       map[string]uint32{"X": 1},
		remoteStale: map[string]string{"X": "BC:1"}, asked: true,
		want: wantPlan{unstale: map[string]uint32{"X": 1}},
	},
	{
		name:   "no live copy and none here: the newest stale copy is fetched from the members that hold it",
		epochs: []string{"AB", "ABC"}, self: 'A', copies: 2, settled: 2,
		objects:     map[string]string{"X": "2:A", "Y": "2:-A"},
		remoteStale: map[string]string{"X": "BC:1", "Y": "B:1"}, asked: true,
		want: wantPlan{fetch: map[string]string{"X": "BC:1"}},
	},
	{
		name:   "a live copy elsewhere wins over every stale copy",
		epochs: []string{"AB", "ABC"}, self: 'A', copies: 2, settled: 2,
		objects:     map[string]string{"X": "2:A"},
		stale:       map[string]uint32{"X": 1},
		remote:      map[string]string{"X": "C"},
		remoteStale: map[string]string{"X": "B:1"}, asked: true,
		want: wantPlan{fetch: map[string]string{"X": "C"}},
	},
	{
		name:   "no live copy, a member did not answer: neither put back nor fetched",
		epochs: []string{"AB", "ABC"}, self: 'A', copies: 2, settled: 2,
		objects:     map[string]string{"X": "2:A"},
		stale:       map[string]uint32{"X": 1},
		remoteStale: map[string]string{"X": "B:2"}, asked: true, partial: true,
	},
	{
		name:   "last current: a member and target through the settled epoch and after, until it was not",
		epochs: []string{"ABCD", "ABCD", "ABCD", "ABCDE", "ABC"}, self: 'A', copies: 1, settled: 2,
		objects: map[string]string{"X": "2:A 3:A 4:-A 5:A", "Y": "2:-A 5:A"},
		live:    "X Y",
		want:    wantPlan{stale: "X Y", staleAt: map[string]uint32{"X": 3, "Y": 1}},
	},
	{
		name:   "return, a member did not answer: nothing comes back from the stale area",
		epochs: []string{"ABC", "AB", "ABC"}, self: 'C', copies: 2, settled: 1,
		objects: map[string]string{"P": "3:C", "Q": "3:C"},
		live:    "P Q",
		remote:  map[string]string{"P": "A"}, asked: true, partial: true,
		want: wantPlan{stale: "P Q", fetch: map[string]string{"P": "A"}},
	},
	{
		name:   "return, settling only (before the others were asked)",
		epochs: []string{"ABC", "AB", "ABC"}, self: 'C', copies: 2, settled: 1,
		objects: map[string]string{"P": "3:C", "R": "3:-C"},
		live:    "P R",
		want:    wantPlan{stale: "P R"},
	},
	{
		name:   "an earlier stale copy is put back at its newest epoch",
		epochs: []string{"AB", "ABC"}, self: 'A', copies: 1, settled: 2,
		objects: map[string]string{"Q": "2:A"},
		stale:   map[string]uint32{"Q": 2},
		asked:   true,
		want:    wantPlan{unstale: map[string]uint32{"Q": 2}},
	},
	{
		name:   "leftover: a copy from before an epoch this node was not its target in goes aside",
		epochs: []string{"ABC", "ABCD", "ABC"}, self: 'A', copies: 2, settled: 1,
		objects: map[string]string{"X": "1:A 2:-A 3:A", "Y": "1:A 2:A 3:A"},
		live:    "X Y",
		remote:  map[string]string{"X": "B", "Y": "B"}, asked: true,
		want: wantPlan{stale: "X", fetch: map[string]string{"X": "B"}},
	},
	{
		name:   "already settled: nothing goes aside again",
		epochs: []string{"ABC", "ABCD", "ABC"}, self: 'A', copies: 2, settled: 3,
		objects: map[string]string{"X": "1:A 2:-A 3:A"},
		live:    "X",
		remote:  map[string]string{"X": "B"}, asked: true,
	},
	{
		name:   "recovery disabled: copies are settled, nothing else",
		epochs: []string{"ABC", "AB", "ABC"}, self: 'C', copies: 2, settled: 1, disabled: true,
		objects: map[string]string{"P": "3:C", "Q": "3:C", "R": "3:-C"},
		live:    "P Q R",
		remote:  map[string]string{"P": "A", "R": "AB"}, asked: true,
		want: wantPlan{stale: "P Q R"},
	},
	{
		name:   "settled longer ago than the history kept: as if absent",
		epochs: append(slices.Repeat([]string{"AB"}, 17), "ABC"), self: 'A', copies: 2, settled: 1,
		objects: map[string]string{"K": "18:A"},
		live:    "K",
		want:    wantPlan{stale: "K"},
	},
	{
		name:   "within the history kept: present throughout, nothing goes aside",
		epochs: append(slices.Repeat([]string{"AB"}, 16), "ABC"), self: 'A', copies: 2, settled: 1,
		objects: map[string]string{"K": "17:A"},
		live:    "K",
	},
	{
		name:   "not a member (left, or never joined): nothing at all",
		epochs: []string{"ABC", "AB"}, self: 'C', copies: 2, settled: 1,
		objects: map[string]string{"P": "2:A"},
		live:    "P",
		remote:  map[string]string{"P": "A"}, asked: true,
	},
}

// letterNode is node A, B, ... on port 7000, 7001, ..., each in its own
// zone (all share one address, whose default zone would be common).
func letterNode(c byte) proto.Node {
	n := node(7000 + uint16(c-'A'))
	n.Zone = uint32(c)
	return n
}

func members(s string) []proto.Node {
	var out []proto.Node
	for i := 0; i < len(s); i++ {
		out = append(out, letterNode(s[i]))
	}
	return out
}

func names(nodes []proto.Node) string {
	var b strings.Builder
	for _, n := range nodes {
		b.WriteByte(byte('A' + n.Port - 7000))
	}
	return b.String()
}

// pickOids finds a distinct data oid for each object that meets its rules.
func pickOids(t *testing.T, c planCase, rings []*placement.Ring) (map[string]uint64, map[uint64]string) {
	t.Helper()
	byName, byOid := map[string]uint64{}, map[uint64]string{}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.objects {
			if !yield(k) {
				return
			}
		}
	}) {
		rules := strings.Fields(c.objects[name])
		found := false
		for i := uint32(0); i < 200000 && !found; i++ {
			oid := proto.VidToDataOid(0x7c2b25, i)
			if _, used := byOid[oid]; used {
				continue
			}
			ok := true
			for _, r := range rules {
				es, n, _ := strings.Cut(r, ":")
				e, err := strconv.Atoi(es)
				if err != nil || e < 1 || e > len(rings) {
					t.Fatalf("%s: bad rule %q", name, r)
				}
				want := !strings.HasPrefix(n, "-")
				id := letterNode(strings.TrimPrefix(n, "-")[0]).NodeID
				if rings[e-1].Holds(oid, c.copies, id) != want {
					ok = false
					break
				}
			}
			if ok {
				byName[name], byOid[oid] = oid, name
				found = true
			}
		}
		if !found {
			t.Fatalf("no oid meets %s's rules %q", name, c.objects[name])
		}
	}
	return byName, byOid
}

func TestPlan(t *testing.T) {
	for _, c := range planCases {
		t.Run(c.name, func(t *testing.T) {
			rings := make([]*placement.Ring, len(c.epochs))
			for i, m := range c.epochs {
				rings[i] = placement.New(members(m))
			}
			oid, name := pickOids(t, c, rings)
			epoch := uint32(len(c.epochs))
			v := View{Epoch: epoch, Self: letterNode(c.self).NodeID, Nodes: members(c.epochs[epoch-1]),
				DefaultCopies: c.copies, Disabled: c.disabled}
			for e := int(epoch) - 1; e >= 1 && len(v.History) < placement.HistoryDepth; e-- {
				v.History = append(v.History, members(c.epochs[e-1]))
			}
			local := Local{Stale: map[uint64]uint32{}}
			for _, n := range strings.Fields(c.live) {
				local.Objects = append(local.Objects, oid[n])
			}
			for n, e := range c.stale {
				local.Stale[oid[n]] = e
			}
			var remote *Remote
			if c.asked {
				remote = &Remote{Where: map[uint64][]proto.Node{}, Complete: !c.partial}
				for n, holders := range c.remote {
					remote.Where[oid[n]] = members(holders)
				}
				remote.Stale = map[uint64]StaleSource{}
				for n, src := range c.remoteStale {
					holders, es, _ := strings.Cut(src, ":")
					e, err := strconv.Atoi(es)
					if err != nil {
						t.Fatalf("bad remoteStale %q", src)
					}
					remote.Stale[oid[n]] = StaleSource{Epoch: uint32(e), Nodes: members(holders)}
				}
			}
			p := plan(v, local, remote, c.settled)

			got := wantPlan{unstale: map[string]uint32{}, fetch: map[string]string{}}
			list := func(oids []uint64) string {
				var s []string
				for _, o := range oids {
					s = append(s, name[o])
				}
				slices.Sort(s)
				return strings.Join(s, " ")
			}
			var set []uint64
			staleAt := map[string]uint32{}
			for _, sc := range p.Stale {
				set = append(set, sc.Oid)
				staleAt[name[sc.Oid]] = sc.Epoch
			}
			got.stale, got.drop = list(set), list(p.Drop)
			for _, u := range p.Unstale {
				got.unstale[name[u.Oid]] = u.Epoch
			}
			for _, f := range p.Fetch {
				got.fetch[name[f.Oid]] = names(f.Sources)
				if f.Epoch != 0 {
					got.fetch[name[f.Oid]] += fmt.Sprintf(":%d", f.Epoch)
				}
			}
			if c.want.staleAt != nil && fmt.Sprint(staleAt) != fmt.Sprint(c.want.staleAt) {
				t.Errorf("copies set aside as of epochs %v, want %v", staleAt, c.want.staleAt)
			}
			if g, w := fmt.Sprint(got.stale, got.unstale, got.fetch, got.drop),
				fmt.Sprint(c.want.stale, orEmpty(c.want.unstale), orEmpty(c.want.fetch), c.want.drop); g != w {
				t.Errorf("plan: stale [%s] unstale %v fetch %v drop [%s]\n want: stale [%s] unstale %v fetch %v drop [%s]",
					got.stale, got.unstale, got.fetch, got.drop, c.want.stale, orEmpty(c.want.unstale), orEmpty(c.want.fetch), c.want.drop)
			}
		})
	}
}

func orEmpty[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// TestPlanIsPure: the same inputs give the same plan, and plan keeps its
// hands off them.
func TestPlanIsPure(t *testing.T) {
	a, b, c := letterNode('A'), letterNode('B'), letterNode('C')
	v := View{Epoch: 3, Self: c.NodeID, Nodes: []proto.Node{a, b, c}, History: [][]proto.Node{{a, b}, {a, b, c}}, DefaultCopies: 2}
	var objs []uint64
	where := map[uint64][]proto.Node{}
	for i := uint32(0); i < 64; i++ {
		objs = append(objs, proto.VidToDataOid(1, i))
		where[proto.VidToDataOid(2, i)] = []proto.Node{b, a}
	}
	local := Local{Objects: slices.Clone(objs), Stale: map[uint64]uint32{proto.VidToDataOid(3, 0): 2}}
	remote := &Remote{Where: where, Complete: true}
	p1 := plan(v, local, remote, 1)
	p2 := plan(v, local, remote, 1)
	if fmt.Sprint(p1) != fmt.Sprint(p2) {
		t.Fatal("two plans of the same inputs differ")
	}
	if !slices.Equal(local.Objects, objs) || len(local.Stale) != 1 || local.Stale[proto.VidToDataOid(3, 0)] != 2 {
		t.Fatal("plan changed its inputs")
	}
	if len(p1.Stale) != len(objs) {
		t.Fatalf("C was absent from epoch 2: %d of %d copies set aside", len(p1.Stale), len(objs))
	}
}

// TestPlanHandover: of the copies no longer placed here, those a member
// placed to hold them lists live are handed over at once; not with an
// incomplete Remote, and not when only a member not placed to hold it
// lists it.
func TestPlanHandover(t *testing.T) {
	a, b, c, d := letterNode('A'), letterNode('B'), letterNode('C'), letterNode('D')
	v := View{Epoch: 2, Self: a.NodeID, Nodes: []proto.Node{a, b, c, d}, History: [][]proto.Node{{a, b, c}}, DefaultCopies: 2}
	ring := placement.New(v.Nodes)
	var moved []uint64 // placed on A in epoch 1 (of A, B, C), not in epoch 2
	old := placement.New(v.History[0])
	for i := uint32(0); len(moved) < 20; i++ {
		oid := proto.VidToDataOid(0x7c2b25, i)
		if old.Holds(oid, 2, a.NodeID) && !ring.Holds(oid, 2, a.NodeID) {
			moved = append(moved, oid)
		}
	}
	local := Local{Objects: moved, Stale: map[uint64]uint32{}}
	remote := &Remote{Where: map[uint64][]proto.Node{}, Stale: map[uint64]StaleSource{}, Complete: true}
	var want []uint64
	for i, oid := range moved {
		targets := ring.Locate(oid, 2)
		switch i % 3 {
		case 0: // a target holds it: handed over
			remote.Where[oid] = targets[:1]
			want = append(want, oid)
		case 1: // only a member not placed to hold it lists it
			for _, n := range v.Nodes {
				if !n.Same(a.NodeID) && !ring.Holds(oid, 2, n.NodeID) {
					remote.Where[oid] = []proto.Node{n}
				}
			}
		case 2: // nobody lists it (the targets are still copying)
		}
	}
	slices.Sort(want)
	p := plan(v, local, remote, 2)
	if len(p.Drop) != len(moved) {
		t.Fatalf("drop %d copies, want all %d", len(p.Drop), len(moved))
	}
	got := slices.Clone(p.Handover)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("handover %x, want %x", got, want)
	}
	remote.Complete = false
	if p := plan(v, local, remote, 2); len(p.Handover) != 0 {
		t.Fatalf("incomplete lists: handover %x, want none", p.Handover)
	}
}
