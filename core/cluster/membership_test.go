package cluster

import (
	"net/netip"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func portNode(port uint16) proto.Node {
	return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)), NrVnodes: 128, Space: 1 << 30}
}

// Changes come out one per node, in the order they were noticed, and
// applying them one by one walks from the current epoch to the live set.
func TestPendingChanges(t *testing.T) {
	a, b, c, d, e := portNode(1), portNode(2), portNode(3), portNode(4), portNode(5)
	seq := map[uint16]int64{3: 10, 1: 30, 5: 20}
	noticed := func(id proto.NodeID) int64 { return seq[id.Port] }
	cur := []proto.Node{a, b, c}
	bigger := d
	bigger.Space *= 2 // a capacity change alone is no membership change
	live := []proto.Node{b, d, e}
	got := PendingChanges(cur, live, noticed)
	want := []struct {
		port uint16
		join bool
	}{{4, true}, {3, false}, {5, true}, {1, false}} // d unknown (0) first, then by seq
	if len(got) != len(want) {
		t.Fatalf("changes %+v", got)
	}
	nodes := cur
	for i, w := range want {
		if got[i].Node.Port != w.port || got[i].Join != w.join {
			t.Fatalf("change %d = %d join=%v, want %d join=%v", i, got[i].Node.Port, got[i].Join, w.port, w.join)
		}
		nodes = got[i].Apply(nodes)
	}
	if len(nodes) != 3 || nodes[0].Port != 2 || nodes[1].Port != 4 || nodes[2].Port != 5 {
		t.Fatalf("after every change: %v", nodes)
	}
	if len(PendingChanges(nodes, []proto.Node{b, bigger, e}, noticed)) != 0 {
		t.Fatal("a capacity change counted as a membership change")
	}
}
