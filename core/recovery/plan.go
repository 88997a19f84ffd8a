package recovery

import (
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
	Objects []uint64          // live copies (obj/): objects and strip keys
	Stale   map[uint64]uint32 // per oid, the newest epoch a copy was set aside in
}

// Remote is what the other storing members hold.
type Remote struct {
	Where    map[uint64][]proto.Node // oid → the members that listed it
	Complete bool                    // every storing member answered
}

// Plan is the to-do list of one run, in the order the executor carries it
// out.
type Plan struct {
	// Stale: copies that cannot be current, set aside before anything of
	// this epoch is served (the epoch's settling). Only when the epoch is
	// not settled yet.
	Stale []uint64
	// Unstale: copies set aside earlier that are the only ones left (no
	// member lists the object), put back. Only with a complete Remote.
	Unstale []StaleCopy
	// Fetch: objects this node should hold and lacks, each with its
	// sources ranked newest first (placement.Rank).
	Fetch []Fetch
	// FetchStrips: strips of erasure-coded objects this node should hold
	// and lacks (copied from a past holder or rebuilt, ec.go).
	FetchStrips []StripFetch
	// Drop: copies no longer placed here, set aside once every member has
	// finished recovering the epoch (cleanup).
	Drop []uint64
}

// StaleCopy is a copy of Oid set aside in Epoch.
type StaleCopy struct {
	Oid   uint64
	Epoch uint32
}

// StripFetch is strip Index of object Oid.
type StripFetch struct {
	Oid   uint64
	Index int
}

// Fetch is one object to copy in and where from.
type Fetch struct {
	Oid     uint64
	Sources []proto.Node
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
//   - Unstale: an object placed here that no member lists and no live copy
//     here holds comes back from the stale area, newest copy first. Only
//     when every member answered: one that did not may have a newer copy.
//   - Fetch: every object placed here that a member lists and no live copy
//     here holds, from the members that list it, newest target first.
//   - Strips: the keys of an erasure-coded object's strips are judged
//     like copies, each by the node placed at its index (holdsKey); a
//     strip whose index no node holds (fewer zones than strips) is never
//     dropped (unplaced).
//   - Drop: every live copy not placed here. The executor carries it out
//     only once every member has recovered the epoch, so no copy is
//     dropped before every node that should hold the object could copy
//     it.
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
				p.Stale = append(p.Stale, oid)
				delete(live, oid)
				stale[oid] = max(stale[oid], v.Epoch)
			}
		}
	}
	if v.Disabled {
		return p
	}
	if remote != nil {
		if remote.Complete {
			for _, oid := range sortedKeys(stale) {
				plain, _, _ := proto.SplitKey(oid)
				if holdsKey(ring, oid, v.copies(oid), v.Self) && len(remote.Where[plain]) == 0 && !live[oid] {
					p.Unstale = append(p.Unstale, StaleCopy{Oid: oid, Epoch: stale[oid]})
					live[oid] = true
				}
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
		}
	}
	return p
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
