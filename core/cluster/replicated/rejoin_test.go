package replicated

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func testNode(last byte) proto.Node {
	return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, last}), 7000)), NrVnodes: 128, Zone: uint32(last)}
}

// A node the cluster declared dead, catching up with the log after the
// partition healed: Outside from the epoch that removed it until the one
// that takes it back; OnPeer hears of every removal and return but its
// own; lostPeers names the members gossip does not see.
func TestOutsideAndPeers(t *testing.T) {
	a, b, c := testNode(1), testNode(2), testNode(3)
	cfg := DefaultConfig()
	cfg.Self = c
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	var events []string
	cfg.OnPeer = func(addr string, alive bool) {
		if alive {
			events = append(events, "+"+addr)
		} else {
			events = append(events, "-"+addr)
		}
	}
	d := &Driver{cfg: cfg, fsm: newFSM(), members: map[string]meta{}, gossipAddr: map[string]string{}}
	d.ident.Store(&Identity{})
	apply := func(e *cluster.Entry) {
		t.Helper()
		if res := d.fsm.st.Apply(e); res != proto.ResSuccess {
			t.Fatalf("apply %v: %v", e.Kind, res)
		}
		if e.Kind == cluster.KindEpoch {
			d.peersChanged(e)
		}
	}
	if d.Outside() {
		t.Fatal("an unformatted node is outside")
	}
	apply(&cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Time: 1, Copies: 3, Store: "plain", BlockSizeShift: 22, Nodes: []proto.Node{a, b, c}})
	if d.Outside() {
		t.Fatal("a member is outside")
	}
	apply(cluster.NewEpoch(1, []proto.Node{a, b}, false, false, time.Unix(2, 0)))
	if !d.Outside() {
		t.Fatal("a node the epoch removed is not outside")
	}
	apply(cluster.NewEpoch(2, []proto.Node{a}, false, false, time.Unix(3, 0)))
	apply(cluster.NewEpoch(3, []proto.Node{a, b, c}, false, false, time.Unix(4, 0)))
	if d.Outside() {
		t.Fatal("a node taken back is outside")
	}
	// Its own removal and return are not a peer's.
	want := []string{"-" + b.NodeID.String(), "+" + b.NodeID.String()}
	if !slices.Equal(events, want) {
		t.Fatalf("OnPeer heard %v, want %v", events, want)
	}
	// Gossip sees a alive, not b: b is lost, at its derived gossip port
	// until gossip told where it was.
	d.members[a.NodeID.String()] = meta{Node: a}
	if got, want := d.lostPeers(), []string{"10.0.0.2:17000"}; !slices.Equal(got, want) {
		t.Fatalf("lost peers %v, want %v", got, want)
	}
	d.gossipAddr[b.NodeID.String()] = "10.0.0.2:9999"
	if got, want := d.lostPeers(), []string{"10.0.0.2:9999"}; !slices.Equal(got, want) {
		t.Fatalf("lost peers %v, want %v", got, want)
	}
}
