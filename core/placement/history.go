package placement

import (
	"slices"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Copies and epochs (docs/protocol.md §5.6). Within one epoch every write of an
// object reaches all its targets, so a node that was a target in the
// epoch before the current one holds the object as last written. A node
// that stopped being a target earlier may still hold a copy, until the
// cleanup after recovery drops it, and that copy may have missed every
// write since: it is a source of last resort, never a peer to trust.

// HistoryDepth is how many epochs before the current one count when
// ranking the copies of an object (Rank): the nodes read from when the
// object's targets lack it, and the sources recovery copies from. A node
// that was a target only before them ranks with the never-targets, last.
// A node whose copies were last settled longer ago than that trusts none
// of them (recovery).
const HistoryDepth = 16

// Rank orders holders, the nodes that have a copy of oid (wanting copies
// copies), by the newest past epoch in which each was one of oid's
// targets, newest first. past[0] is the ring of the epoch before the
// current one, past[1] the epoch before that, and so on. Holders that
// were never a target in past come last. Ties keep the holders' order.
func Rank(past []*Ring, oid uint64, copies int, holders []proto.Node) []proto.Node {
	age := make([]int, len(holders)) // index into past; len(past): never
	for i := range age {
		age[i] = len(past)
	}
	left := len(holders)
	for e, r := range past {
		if left == 0 {
			break
		}
		for _, t := range r.Locate(oid, copies) {
			for i, h := range holders {
				if age[i] == len(past) && h.Same(t.NodeID) {
					age[i] = e
					left--
				}
			}
		}
	}
	idx := make([]int, len(holders))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return age[a] - age[b] })
	out := make([]proto.Node, len(holders))
	for i, j := range idx {
		out[i] = holders[j]
	}
	return out
}

// Current reports whether the copy of oid on id is as last written,
// judged by placement alone: id was one of oid's targets in the epoch
// before the current one (prev; nil when there is none, as after a
// format). A copy that is not current may be a leftover from an older
// epoch.
func Current(prev *Ring, oid uint64, copies int, id proto.NodeID) bool {
	return prev == nil || prev.Holds(oid, copies, id)
}
