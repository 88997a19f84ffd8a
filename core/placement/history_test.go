package placement

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func histNode(port uint16) proto.Node {
	n := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)), NrVnodes: 64}
	n.Zone = uint32(port)
	return n
}

func TestRank(t *testing.T) {
	a, b, c, d, e := histNode(1), histNode(2), histNode(3), histNode(4), histNode(5)
	// Epoch 1: a b c; epoch 2: d joined; epoch 3 (current): b left.
	e1, e2 := New([]proto.Node{a, b, c}), New([]proto.Node{a, b, c, d})
	past := []*Ring{e2, e1}
	const copies = 2
	// Find an object whose targets moved from epoch 1 to epoch 2.
	var oid uint64
	var old, cur []proto.Node
	for o := uint64(1); ; o++ {
		old, cur = e1.Locate(o, copies), e2.Locate(o, copies)
		if !slices.Equal(nodeIDs(old), nodeIDs(cur)) && slices.ContainsFunc(cur, func(n proto.Node) bool { return n.NodeID == d.NodeID }) {
			oid = o
			break
		}
	}
	var leftover proto.Node // a target in epoch 1 only
	for _, n := range old {
		if !slices.ContainsFunc(cur, func(m proto.Node) bool { return m.NodeID == n.NodeID }) {
			leftover = n
		}
	}
	// Every node reports a copy, the leftover first, e (never a target)
	// second.
	holders := []proto.Node{leftover, e}
	for _, n := range []proto.Node{a, b, c, d} {
		if n.NodeID != leftover.NodeID {
			holders = append(holders, n)
		}
	}
	got := Rank(past, oid, copies, holders)
	if len(got) != len(holders) {
		t.Fatalf("Rank returned %d of %d holders", len(got), len(holders))
	}
	for i, n := range got[:len(cur)] {
		if !slices.ContainsFunc(cur, func(m proto.Node) bool { return m.NodeID == n.NodeID }) {
			t.Fatalf("rank %d is %v, not one of epoch 2's targets %v", i, n.NodeID, nodeIDs(cur))
		}
	}
	if got[len(cur)].NodeID != leftover.NodeID {
		t.Fatalf("epoch 1's leftover ranks %v, want right after epoch 2's targets: %v", got[len(cur)].NodeID, nodeIDs(got))
	}
	if got[len(got)-1].NodeID != e.NodeID && got[len(got)-2].NodeID != e.NodeID {
		t.Fatalf("a node never a target ranks before a past target: %v", nodeIDs(got))
	}
	if !Current(e2, oid, copies, cur[0].NodeID) || Current(e2, oid, copies, leftover.NodeID) || !Current(nil, oid, copies, e.NodeID) {
		t.Fatal("Current disagrees with epoch 2's placement")
	}
	if got := Rank(nil, oid, copies, holders); !slices.Equal(nodeIDs(got), nodeIDs(holders)) {
		t.Fatal("Rank without a history reordered the holders")
	}
}

func nodeIDs(ns []proto.Node) []proto.NodeID {
	out := make([]proto.NodeID, len(ns))
	for i, n := range ns {
		out[i] = n.NodeID
	}
	return out
}
