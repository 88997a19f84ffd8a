package cluster

import (
	"slices"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// sameNode reports whether a and b are one node: the protocol address
// and port identify a sheep (Sheepdog's node_cmp).
func sameNode(a, b proto.NodeID) bool { return a.Addr == b.Addr && a.Port == b.Port }

// Change is one membership change waiting to become an epoch.
type Change struct {
	Node proto.Node
	Join bool // false: the node left
	// Seq orders changes: when the driver noticed it (0: not known, first).
	Seq int64
}

// PendingChanges lists how live differs from cur, the node list of the
// current epoch, one Change per node, in the order they were noticed
// (noticed maps a node's address to when gossip last reported it joining
// or leaving), ties in node order. A node in both lists is no change,
// whatever its other fields: an epoch records who is in, not their
// capacity.
//
// Sheepdog commits one epoch per membership change, in order; the driver
// commits NextMembers one change at a time so that no change is folded
// into another's epoch, however close together they come.
func PendingChanges(cur, live []proto.Node, noticed func(proto.NodeID) int64) []Change {
	var out []Change
	for _, n := range cur {
		if !slices.ContainsFunc(live, func(l proto.Node) bool { return sameNode(l.NodeID, n.NodeID) }) {
			out = append(out, Change{Node: n, Seq: noticed(n.NodeID)})
		}
	}
	for _, n := range live {
		if !slices.ContainsFunc(cur, func(c proto.Node) bool { return sameNode(c.NodeID, n.NodeID) }) {
			out = append(out, Change{Node: n, Join: true, Seq: noticed(n.NodeID)})
		}
	}
	slices.SortStableFunc(out, func(a, b Change) int {
		if a.Seq != b.Seq {
			if a.Seq < b.Seq {
				return -1
			}
			return 1
		}
		return a.Node.NodeID.Compare(b.Node.NodeID)
	})
	return out
}

// Apply returns nodes with c applied, in node order.
func (c Change) Apply(nodes []proto.Node) []proto.Node {
	out := slices.DeleteFunc(slices.Clone(nodes), func(n proto.Node) bool { return sameNode(n.NodeID, c.Node.NodeID) })
	if c.Join {
		out = append(out, c.Node)
	}
	return sortedNodes(out)
}
