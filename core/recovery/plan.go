package recovery

import (
	"maps"
	"slices"

	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// The planner: what a node does to its copies for one epoch, as a pure
// function of what it knows (plan). The executor (run) gathers the inputs
// and carries the decisions out; everything it decides, it decides here.

// View is what a run knows of the cluster.
type View struct {
	Epoch uint32
	Ctime uint64 // the format the epochs belong to
	Self  proto.NodeID
	// Nodes are the members of Epoch.
	Nodes []proto.Node
	// History holds the members of the epochs before Epoch, newest first
	// (History[0] is Epoch-1), at most placement.HistoryDepth of them and
	// never before the format (epoch 1).
	History [][]proto.Node
	// Copies is each vid's copy count; DefaultCopies applies to the rest.
	Copies        map[uint32]int
	DefaultCopies int
	// Policies holds the copy policy of each erasure-coded vid; their
	// data objects are kept as strips, one per placed node (ec.go).
	Policies map[uint32]erasure.Policy
	// Disabled: recovery is switched off. Copies that cannot be current
	// are still set aside; nothing is fetched, restored or dropped.
	Disabled bool
}

// member reports whether self is a member of the view's epoch.
func (v *View) member() bool { return hasNode(v.Nodes, v.Self) }

func hasNode(nodes []proto.Node, id proto.NodeID) bool {
	return slices.ContainsFunc(nodes, func(n proto.Node) bool { return n.Same(id) })
}

func (v *View) copies(oid uint64) int {
	if c, ok := v.Copies[proto.OidToVid(oid)]; ok {
		return c
	}
	return v.DefaultCopies
}

// Local is this node's store as the run finds it.
type Local struct {
	Objects []uint64 // live copies (obj/): objects and strip keys
	// Stale holds, per key, the newest epoch a copy set aside here was
	// current in (the "oid.epoch" of its name).
	Stale map[uint64]uint32
}

// Remote is what the other storing members hold.
type Remote struct {
	Where map[uint64][]proto.Node // oid → the members that listed it
	// Stale holds, per object, the newest copy in the other members'
	// stale areas: the epoch it was current in and the members that hold
	// a copy of that epoch (replicated objects only).
	Stale    map[uint64]StaleSource
	Complete bool // every storing member answered both lists
}

// StaleSource is where the newest stale copy of an object is: the members
// Nodes hold a copy that was current in Epoch.
type StaleSource struct {
	Epoch uint32
	Nodes []proto.Node
}

// Plan is the to-do list of one run, in the order the executor carries it
// out.
type Plan struct {
	// Stale: copies that cannot be current, set aside before anything of
	// this epoch is served (the epoch's settling), each with the last
	// epoch it was current in. Only when the epoch is not settled yet.
	Stale []StaleCopy
	// Unstale: copies set aside here earlier that are the newest left (no
	// member lists the object live, and no member's stale copy is newer),
	// put back. Only with a complete Remote.
	Unstale []StaleCopy
	// Fetch: objects this node should hold and lacks, each with its
	// sources ranked newest first (placement.Rank); and objects no member
	// holds live whose newest stale copy is on another member (Epoch set).
	Fetch []Fetch
	// FetchStrips: strips of erasure-coded objects this node should hold
	// and lacks (copied from a past holder or rebuilt, ec.go).
	FetchStrips []StripFetch
	// Drop: copies no longer placed here, set aside once every member has
	// finished recovering the epoch (cleanup).
	Drop []uint64
	// Handover: the copies of Drop that a member placed to hold them in
	// this epoch lists live already (with a complete Remote), set aside at
	// once, as Sheepdog's recovery moves every copy no longer placed on
	// its node to .stale when it starts: the object stays readable and
	// writable through that member, and the stale copy still serves
	// recovery reads until cleanup purges it. Not strips (each index has
	// its own holder).
	Handover []uint64
}

// StaleCopy is a copy of Oid that was current up to and including Epoch
// (and may have missed writes of later epochs).
type StaleCopy struct {
	Oid   uint64
	Epoch uint32
}

// StripFetch is strip Index of object Oid.
type StripFetch struct {
	Oid   uint64
	Index int
}

// Fetch is one object to copy in and where from. Epoch 0: the sources'
// live copies. Otherwise the sources' stale copies current in Epoch
// (READ_PEER at that tgt_epoch), read when no live copy is left.
type Fetch struct {
	Oid     uint64
	Sources []proto.Node
	Epoch   uint32
}

// settledSpan is how many epochs before epoch its first run judges the
// copies over: those since the last settled one, or since the format when
// none was (0: the store was wiped at the format, and nothing settled
// since).
func settledSpan(settled, epoch uint32) int {
	if epoch <= 1 {
		return 0
	}
	return int(epoch - max(settled, 1))
}

// plan decides what this node does with its copies in view's epoch.
// settled is the last epoch whose copies were settled (of the same
// format); remote is nil before the other members were asked.
//
// Decisions, and the invariant each keeps:
//
//   - Stale (when settled < epoch), judged over every epoch since the
//     last settled one (quick successive epochs collapse into one run): a
//     node absent from one of them missed writes, so none of its copies
//     may be served or copied from, and all go aside; a node beyond the
//     history kept counts as absent. A copy of an object this node holds
//     now but was not a target of in one of them is a leftover that may
//     have missed that epoch's writes, and goes aside too. Copies merely no
//     longer placed here stay (others may still copy them) until Drop.
//     Each goes aside named by the last epoch it was current in
//     (lastCurrent): the copies of an object that nobody holds live any
//     more are ranked by it.
//   - Unstale, or a fetch of a stale copy: an object placed here that no
//     member lists live and no live copy here holds is restored from the
//     newest stale copy among this node's and every member's: this node's
//     own when none is newer (a tie keeps ours: same epoch, same writes),
//     else fetched from a member that holds the newest. Every node that
//     should hold the object decides alike on the same lists, so all end
//     with the newest copy, never each with its own. Only when every
//     member answered: one that did not may have a newer copy.
//   - Fetch: every object placed here that a member lists and no live copy
//     here holds, from the members that list it, newest target first.
//   - Strips: the keys of an erasure-coded object's strips are judged
//     like copies, each by the node placed at its index (holdsKey); a
//     strip whose index no node holds (fewer zones than strips) is never
//     dropped (unplaced).
//   - Drop: every live copy not placed here. The executor carries it out
//     only once every member has recovered the epoch, so no copy is
//     dropped before every node that should hold the object could copy
//     it. Handover: those of them another member placed here already
//     holds live, set aside at once (their stale copies stay until the
//     same point).
//
// The later decisions see the earlier ones: a copy set aside by Stale is
// no live copy for Unstale, Fetch and Drop, and is a stale copy of Epoch.
func plan(v View, local Local, remote *Remote, settled uint32) Plan {
	var p Plan
	if v.Epoch == 0 || !v.member() {
		return p
	}
	ring := placement.New(v.Nodes)
	past := make([]*placement.Ring, len(v.History))
	for i, nodes := range v.History {
		past[i] = placement.New(nodes)
	}
	live := make(map[uint64]bool, len(local.Objects))
	for _, oid := range local.Objects {
		live[oid] = true
	}
	stale := make(map[uint64]uint32, len(local.Stale))
	for oid, e := range local.Stale {
		stale[oid] = e
	}

	if settled < v.Epoch {
		span := settledSpan(settled, v.Epoch)
		absent := span > len(past)
		for i := 0; i < span && !absent; i++ {
			absent = !hasNode(v.History[i], v.Self)
		}
		current := func(oid uint64, c int) bool {
			for i := 0; i < span; i++ {
				if !holdsKey(past[i], oid, c, v.Self) {
					return false
				}
			}
			return true
		}
		for _, oid := range sorted(local.Objects) {
			if c := v.copies(oid); absent || holdsKey(ring, oid, c, v.Self) && !current(oid, c) {
				e := lastCurrent(v, past, span, oid, c)
				p.Stale = append(p.Stale, StaleCopy{Oid: oid, Epoch: e})
				delete(live, oid)
				if old, ok := stale[oid]; !ok || e > old {
					stale[oid] = e
				}
			}
		}
	}
	if v.Disabled {
		return p
	}
	if remote != nil {
		if remote.Complete {
			keys := maps.Clone(stale)
			for oid := range remote.Stale {
				keys[oid] = 0
			}
			for _, oid := range sortedKeys(keys) {
				plain, _, _ := proto.SplitKey(oid)
				if !holdsKey(ring, oid, v.copies(oid), v.Self) || len(remote.Where[plain]) > 0 || live[oid] {
					continue
				}
				mine, ok := stale[oid]
				if theirs, found := remote.Stale[oid]; found && (!ok || theirs.Epoch > mine) {
					p.Fetch = append(p.Fetch, Fetch{Oid: oid, Sources: slices.Clone(theirs.Nodes), Epoch: theirs.Epoch})
					continue
				}
				p.Unstale = append(p.Unstale, StaleCopy{Oid: oid, Epoch: mine})
				live[oid] = true
			}
		}
		for _, oid := range sortedKeys(remote.Where) {
			c := v.copies(oid)
			if v.Policies[proto.OidToVid(oid)].Erasure() && proto.IsErasureOid(oid) {
				if i := stripIndex(ring, oid, c, v.Self); i >= 0 && !live[proto.StripKey(oid, i)] {
					p.FetchStrips = append(p.FetchStrips, StripFetch{Oid: oid, Index: i})
				}
				continue
			}
			if ring.Holds(oid, c, v.Self) && !live[oid] {
				p.Fetch = append(p.Fetch, Fetch{Oid: oid, Sources: placement.Rank(past, oid, c, remote.Where[oid])})
			}
		}
	}
	for _, oid := range sortedKeys(live) {
		if c := v.copies(oid); !holdsKey(ring, oid, c, v.Self) && !unplaced(ring, oid, c) {
			p.Drop = append(p.Drop, oid)
			if remote != nil && remote.Complete && keptElsewhere(ring, oid, c, remote.Where[oid]) {
				p.Handover = append(p.Handover, oid)
			}
		}
	}
	return p
}

// keptElsewhere reports whether one of holders (members listing oid live)
// is placed to hold oid in ring, so keeps its copy through the epoch.
func keptElsewhere(ring *placement.Ring, oid uint64, copies int, holders []proto.Node) bool {
	if _, _, strip := proto.SplitKey(oid); strip {
		return false
	}
	for _, n := range holders {
		if ring.Holds(oid, copies, n.NodeID) {
			return true
		}
	}
	return false
}

// lastCurrent is the last epoch before v's in which this node's copy of
// oid (c copies) was current, that is received every write: the copy was
// settled in the epoch S the span starts at (S-1 is what it is known
// current in then), and stayed current through each following epoch in
// which this node was a member and one of its targets. A span longer than
// the history kept gives S-1.
func lastCurrent(v View, past []*placement.Ring, span int, oid uint64, c int) uint32 {
	first := v.Epoch - uint32(span) // S
	e := first - 1
	if span > len(past) {
		return e
	}
	for i := span - 1; i >= 0; i-- { // History[i] is epoch v.Epoch-1-i
		if !hasNode(v.History[i], v.Self) || !holdsKey(past[i], oid, c, v.Self) {
			break
		}
		e = v.Epoch - 1 - uint32(i)
	}
	return e
}

func sorted(oids []uint64) []uint64 {
	s := slices.Clone(oids)
	slices.Sort(s)
	return s
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	s := make([]uint64, 0, len(m))
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}
