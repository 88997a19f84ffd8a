package gateway

import (
	"context"
	"log/slog"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// oneNodeGateway is a gateway on a local store in a one-node, one-copy
// cluster.
func oneNodeGateway(t *testing.T) *Gateway {
	t.Helper()
	return localGateway(t, 1)
}

// localGateway is a gateway on a local store, node 127.0.0.1:1 of a
// cluster of it and others, formatted with copies copies and holding VDI
// testVid.
func localGateway(t *testing.T, copies int, others ...proto.Node) *Gateway {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	self := node("127.0.0.1:1", 0)
	cs := &cluster.State{}
	if res := cs.Apply(&cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: uint8(copies), BlockSizeShift: 22, Nodes: append([]proto.Node{self}, others...)}); res != proto.ResSuccess {
		t.Fatal(res)
	}
	if res := cs.Apply(&cluster.Entry{Kind: cluster.KindAddVdi, Vid: testVid, Copies: uint8(copies)}); res != proto.ResSuccess {
		t.Fatal(res)
	}
	peers := NewPeers()
	t.Cleanup(peers.Close)
	return New(self.NodeID, st, &fakeCluster{st: cs}, peers, &store.Locks{}, slog.New(slog.DiscardHandler))
}

// A read or write of a local copy allocates only what placing the object
// costs: the state read into one variable by a closure that escapes
// (View is an interface method) and the target list. Each allocation
// here is paid by every NBD and native request.
func TestLocalPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g := oneNodeGateway(t)
	ctx := context.Background()
	oid := proto.VidToDataOid(testVid, 0)
	buf := make([]byte, 4096)
	if err := g.CreateAndWrite(ctx, oid, 0, 0, buf, 0); err != nil {
		t.Fatal(err)
	}
	read := testing.AllocsPerRun(200, func() {
		if err := g.ReadObject(ctx, oid, 8192, buf); err != nil {
			t.Fatal(err)
		}
	})
	write := testing.AllocsPerRun(200, func() {
		if err := g.WriteObject(ctx, oid, 8192, buf, proto.FlagCmdCache); err != nil {
			t.Fatal(err)
		}
	})
	try := testing.AllocsPerRun(200, func() {
		if !g.TryReadObject(oid, 8192, buf) {
			t.Fatal("a cached read of the local copy was not served without waiting")
		}
	})
	t.Logf("allocations: read %.1f, write-back write %.1f, read without waiting %.1f", read, write, try)
	if read > 3 || write > 8 || try > 3 {
		t.Fatalf("allocations per request: read %.1f (want at most 3), write-back write %.1f (want at most 8), read without waiting %.1f (want at most 3)", read, write, try)
	}
}
