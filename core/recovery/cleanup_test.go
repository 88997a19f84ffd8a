package recovery

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// slowPeer is a member that lists oids, has an empty stale area, and
// finishes recovering epoch only when finish is closed: a STAT_RECOVERY
// with FlagWaitRecovered is held until then (as the server does, up to
// RecoveredWait), one without answers at once.
type slowPeer struct {
	oids   []uint64
	epoch  uint32
	finish chan struct{}
	stats  atomic.Int32
}

func (p *slowPeer) Call(ctx context.Context, _ string, req *proto.Request, _, rbuf []byte) (proto.Response, int, error) {
	switch req.Opcode {
	case proto.OpGetObjList:
		n := 0
		for _, o := range p.oids {
			n += copy(rbuf[n:], binary.LittleEndian.AppendUint64(nil, o))
		}
		return proto.Response{}, n, nil
	case proto.OpGetStaleList:
		return proto.Response{}, 0, nil
	case proto.OpStatRecovery:
		p.stats.Add(1)
		st := proto.RecoveryState{}
		if req.Flags&proto.FlagWaitRecovered != 0 && req.Obj().TgtEpoch == p.epoch {
			select {
			case <-p.finish:
			case <-ctx.Done():
				return proto.Response{}, 0, ctx.Err()
			}
		}
		select {
		case <-p.finish:
			st.State = p.epoch
		default:
		}
		return proto.Response{}, copy(rbuf, st.Marshal()), nil
	}
	return proto.Response{}, 0, errors.New("unexpected op")
}

// TestCleanupDropsOnceThePeerIsDone: a copy no longer placed here is
// dropped as soon as the last member finishes recovering the epoch, told
// by the member's answer to one waiting STAT_RECOVERY, not found out at a
// later poll (Sheepdog's test 103 counts the copies right after a join).
// A copy the member placed to hold it lists live already is set aside at
// once (handed over), and its stale copy is kept until then.
func TestCleanupDropsOnceThePeerIsDone(t *testing.T) {
	for _, listed := range []bool{false, true} {
		name := map[bool]string{false: "peer has not copied it", true: "peer holds it"}[listed]
		t.Run(name, func(t *testing.T) { testCleanupDrops(t, listed) })
	}
}

func testCleanupDrops(t *testing.T, listed bool) {
	ctx := context.Background()
	a, b := node(7000), node(7001)
	st, cl := formattedOne(t, a)
	var oid uint64 // one that moves to B when B joins
	for i, r2 := uint32(0), placement.New([]proto.Node{a, b}); ; i++ {
		if oid = proto.VidToDataOid(0x7c2b25, i); r2.Holds(oid, 1, b.NodeID) {
			break
		}
	}
	if err := st.Create(ctx, oid, 4<<20, 0, []byte("moved"), true); err != nil {
		t.Fatal(err)
	}
	peer := &slowPeer{epoch: 2, finish: make(chan struct{})}
	if listed {
		peer.oids = []uint64{oid}
	}
	rec := New(a.NodeID, st, cl, peer, &store.Locks{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer rec.Stop()
	cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{a, b}}) // epoch 2: B joins
	rec.Start()

	if !rec.WaitRecovered(ctx, 2) {
		t.Fatal("A did not finish recovering epoch 2")
	}
	staleHeld := func() bool {
		list, err := st.ListStale()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list {
			if o.Oid == oid {
				return true
			}
		}
		return false
	}
	time.Sleep(1200 * time.Millisecond) // B is still recovering
	if listed {
		if st.Exists(oid) || !staleHeld() {
			t.Fatalf("B holds the copy: A's should be set aside at once, and kept stale (live %v, stale %v)", st.Exists(oid), staleHeld())
		}
	} else if !st.Exists(oid) {
		t.Fatal("A dropped its copy before B finished recovering")
	}
	finished := time.Now()
	close(peer.finish)
	for st.Exists(oid) || staleHeld() {
		if time.Since(finished) > 5*time.Second {
			t.Fatalf("A kept its copy 5 s after B finished recovering (live %v, stale %v)", st.Exists(oid), staleHeld())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := peer.stats.Load(); n != 1 {
		t.Errorf("A asked B %d times whether it had recovered, want once (a held request)", n)
	}
	t.Logf("dropped %v after B finished", time.Since(finished).Round(time.Millisecond))
}

// TestWaitRecovered: a waiter is woken by the run that completes the
// epoch, gives up when its context ends, and is released by Stop.
func TestWaitRecovered(t *testing.T) {
	ctx := context.Background()
	a := node(7000)
	st, cl := formattedOne(t, a)
	rec := New(a.NodeID, st, cl, noPeers{}, &store.Locks{}, slog.New(slog.NewTextHandler(io.Discard, nil)))

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if rec.WaitRecovered(short, 1) {
		t.Fatal("epoch 1 recovered before any run")
	}
	got := make(chan bool, 1)
	go func() { got <- rec.WaitRecovered(ctx, 1) }()
	rec.Start()
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("WaitRecovered(1) = false after the run")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the run of epoch 1 did not wake the waiter")
	}
	go func() { got <- rec.WaitRecovered(ctx, 5) }()
	time.Sleep(50 * time.Millisecond)
	rec.Stop()
	select {
	case ok := <-got:
		if ok {
			t.Fatal("WaitRecovered(5) = true with epoch 1 only")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not release the waiter")
	}
}
