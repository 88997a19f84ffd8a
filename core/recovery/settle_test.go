package recovery

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// TestSettleWakesOnSettling: I/O waiting for the epoch's copies to settle
// is released by the run that settles them (not by a deadline), and a
// waiter whose context ends gives up at once.
func TestSettleWakesOnSettling(t *testing.T) {
	ctx := context.Background()
	a, b := node(7000), node(7001)
	st, cl := formattedOne(t, a)
	rec := New(a.NodeID, st, cl, noPeers{}, &store.Locks{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer rec.Stop()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a, b}}) // epoch 2, no run yet

	settled := make(chan bool, 1)
	go func() { settled <- rec.Settle(ctx) }()
	select {
	case ok := <-settled:
		t.Fatalf("Settle returned %v before any run for epoch 2", ok)
	case <-time.After(200 * time.Millisecond):
	}
	began := time.Now()
	rec.Start()
	select {
	case ok := <-settled:
		if !ok {
			t.Fatal("Settle gave up instead of seeing the run settle epoch 2")
		}
		// The run waits startDelay before it starts; a deadline would
		// take settleWait.
		if el := time.Since(began); el > settleWait/2 {
			t.Fatalf("Settle returned %v after the run started", el)
		}
	case <-time.After(settleWait):
		t.Fatal("Settle still waiting after the run for epoch 2")
	}

	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a}}) // epoch 3, no run
	cctx, cancel := context.WithCancel(ctx)
	go func() { settled <- rec.Settle(cctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case ok := <-settled:
		if ok {
			t.Fatal("Settle reported epoch 3 settled with no run for it")
		}
	case <-time.After(time.Second):
		t.Fatal("Settle did not give up when its context ended")
	}
}

// formattedOne opens a store and a local cluster in a new dir and formats
// the cluster with node a alone (copies 1, 4 MiB objects).
func formattedOne(t *testing.T, a proto.Node) (*store.Store, *cluster.Local) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(store.Config{Dir: dir, NoSync: true})
	if err != nil {
		t.Skip(err)
	}
	cl, err := cluster.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := cl.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 1, BlockSizeShift: 22, Nodes: []proto.Node{a}}); err != nil || res != proto.ResSuccess {
		t.Fatal(res, err)
	}
	return st, cl
}
