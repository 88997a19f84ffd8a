package recovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

type noPeers struct{}

func (noPeers) Call(context.Context, string, *proto.Request, []byte, []byte) (proto.Response, int, error) {
	return proto.Response{}, 0, errors.New("no peers in this test")
}

func node(port uint16) proto.Node {
	return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:" + itoa(port))), NrVnodes: 64, Space: 1 << 30}
}
func itoa(p uint16) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + p%10)}, b...)
		p /= 10
		if p == 0 {
			return string(b)
		}
	}
}

// A (copies=1) holds X; D joins and becomes X's target while recovery is
// disabled (nothing moves, no write happens), D leaves: A's copy, the only
// one, is moved aside as a leftover; enabling recovery never puts it back
// and cleanup purges it.
func TestLeftoverOnlyCopyLostWhenRecoveryDisabled(t *testing.T) {
	ctx := context.Background()
	a, d := node(7000), node(7001)
	st, cl := formattedOne(t, a)
	// an oid that ring {A,D} puts on D
	ring2 := placement.New([]proto.Node{a, d})
	var oid uint64
	for i := uint32(0); ; i++ {
		oid = proto.VidToDataOid(0x7c2b25, i)
		if ring2.Holds(oid, 1, d.NodeID) {
			break
		}
	}
	data := make([]byte, 4<<20)
	copy(data, "precious")
	if err := st.Create(ctx, oid, int64(len(data)), 0, data, true); err != nil {
		t.Fatal(err)
	}
	rec := New(a.NodeID, st, cl, noPeers{}, &store.Locks{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer rec.Stop()
	wait := func() { time.Sleep(700 * time.Millisecond); rec.Stop() }
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: true})
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a, d}}) // epoch 2: D joins
	rec.Start()
	wait()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a}}) // epoch 3: D leaves
	rec.Start()
	wait()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: false})
	rec.Start()
	wait()
	if !st.Exists(oid) {
		stale, _ := st.ListStale()
		t.Fatalf("the only copy of %016x is gone from obj/ (stale area now: %v)", oid, stale)
	}
}

// A leaves (epoch 2: writes to X go to B only), comes back (epoch 3) and a
// third node joins within the 300 ms before A's run for epoch 3 (epoch 4):
// only the run for epoch 4 happens, A was in epoch 3, so A's copy of X,
// which missed epoch 2's writes, is trusted and kept.
func TestSkippedEpochRejoinTrustsStaleCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(store.Config{Dir: dir, NoSync: true})
	if err != nil {
		t.Skip(err)
	}
	cl, _ := cluster.OpenLocal(dir)
	a, b, c := node(7000), node(7001), node(7002)
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 2, BlockSizeShift: 22, Nodes: []proto.Node{a, b}})
	var oid uint64 // one A holds in epoch 4 (and so is read locally)
	for i, r4 := uint32(0), placement.New([]proto.Node{a, b, c}); ; i++ {
		if oid = proto.VidToDataOid(0x7c2b25, i); r4.Holds(oid, 2, a.NodeID) {
			break
		}
	}
	st.Create(ctx, oid, 4<<20, 0, []byte("old"), true)
	rec := New(a.NodeID, st, cl, noPeers{}, &store.Locks{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer rec.Stop()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{b}})    // 2: A away
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a, b}}) // 3: A back
	rec.Start()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a, b, c}}) // 4: C joins
	rec.Start()
	time.Sleep(700 * time.Millisecond)
	if st.Exists(oid) && rec.Trusted() {
		t.Fatalf("A serves its epoch-1 copy of %016x after missing epoch 2", oid)
	}
}
