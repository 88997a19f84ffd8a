package replicated

import (
	"net/netip"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestVnodeChange(t *testing.T) {
	node := func(port uint16, vnodes uint16) proto.Node {
		return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)), NrVnodes: vnodes}
	}
	cur := []proto.Node{node(7000, 100), node(7001, 100)}
	for _, tc := range []struct {
		name string
		live []proto.Node
		want uint16 // the changed node's new count; 0: none
	}{
		{"same", []proto.Node{node(7000, 100), node(7001, 100)}, 0},
		{"one changed", []proto.Node{node(7000, 100), node(7001, 1)}, 1},
		{"a new node is a join, not a change", []proto.Node{node(7000, 100), node(7001, 100), node(7002, 5)}, 0},
		{"a missing node is a leave, not a change", []proto.Node{node(7000, 100)}, 0},
	} {
		n, ok := vnodeChange(cur, tc.live)
		if ok != (tc.want != 0) || ok && n.NrVnodes != tc.want {
			t.Errorf("%s: %v %v", tc.name, n, ok)
		}
	}
}

func TestSpaceChange(t *testing.T) {
	node := func(port uint16, space uint64) proto.Node {
		return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)), NrVnodes: 128, Space: space}
	}
	cur := []proto.Node{node(7000, 100), node(7001, 100)}
	for _, tc := range []struct {
		name string
		live []proto.Node
		want uint64 // the changed node's new space; 0: none
	}{
		{"same", []proto.Node{node(7000, 100), node(7001, 100)}, 0},
		{"one reweighted", []proto.Node{node(7000, 100), node(7001, 50)}, 50},
		{"a new node is a join, not a change", []proto.Node{node(7000, 100), node(7001, 100), node(7002, 5)}, 0},
		{"a missing node is a leave, not a change", []proto.Node{node(7000, 100)}, 0},
	} {
		n, ok := spaceChange(cur, tc.live)
		if ok != (tc.want != 0) || ok && n.Space != tc.want {
			t.Errorf("%s: %v %v", tc.name, n, ok)
		}
	}
}
