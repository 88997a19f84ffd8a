package recovery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// gatedPeer answers READ_PEER with data, each read waiting for a release.
type gatedPeer struct {
	data    []byte
	reads   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (p *gatedPeer) Call(ctx context.Context, _ string, req *proto.Request, _, rbuf []byte) (proto.Response, int, error) {
	if req.Opcode != proto.OpReadPeer {
		return proto.Response{}, 0, errors.New("unexpected op")
	}
	p.reads.Add(1)
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return proto.Response{}, 0, ctx.Err()
	}
	return proto.Response{}, copy(rbuf, p.data), nil
}

func fetchEnv(t *testing.T) (*Recovery, *store.Store, *store.Locks, *gatedPeer, uint64) {
	t.Helper()
	a := node(7000)
	st, cl := formattedOne(t, a)
	peer := &gatedPeer{data: bytes.Repeat([]byte("peer"), 1<<20), entered: make(chan struct{}), release: make(chan struct{})}
	locks := &store.Locks{}
	rec := New(a.NodeID, st, cl, peer, locks, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return rec, st, locks, peer, proto.VidToDataOid(0x7c2b25, 7)
}

// lockWithin takes oid's lock, failing the test if it is held for long.
func lockWithin(t *testing.T, locks *store.Locks, oid uint64) {
	t.Helper()
	got := make(chan struct{})
	go func() { locks.Lock(oid); close(got) }()
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("the object's lock is held while its copy is read from a peer")
	}
}

// TestRecoverOneReadsWithoutLock: the peer read runs without the object's
// lock; a writer that comes and goes meanwhile makes recovery read again,
// and the second read is stored.
func TestRecoverOneReadsWithoutLock(t *testing.T) {
	rec, st, locks, peer, oid := fetchEnv(t)
	done := make(chan error, 1)
	go func() {
		done <- rec.recoverOne(context.Background(), Fetch{Oid: oid, Sources: []proto.Node{node(7001)}}, 2)
	}()
	<-peer.entered
	lockWithin(t, locks, oid) // a writer of the stripe, during the read
	locks.Unlock(oid)
	peer.release <- struct{}{}
	<-peer.entered // read again: the first may predate the writer's change
	peer.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := peer.reads.Load(); n != 2 {
		t.Fatalf("%d peer reads, want 2", n)
	}
	got := make([]byte, 8)
	if err := st.ReadAt(context.Background(), oid, got, 0); err != nil || string(got) != "peerpeer" {
		t.Fatalf("stored %q, %v", got, err)
	}
}

// TestRecoverOneKeepsNewerCopy: a copy written here during the peer read
// (a gateway filling this node) wins over the one read.
func TestRecoverOneKeepsNewerCopy(t *testing.T) {
	rec, st, locks, peer, oid := fetchEnv(t)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- rec.recoverOne(ctx, Fetch{Oid: oid, Sources: []proto.Node{node(7001)}}, 2) }()
	<-peer.entered
	lockWithin(t, locks, oid)
	err := st.Create(ctx, oid, 4<<20, 0, []byte("newer"), true)
	locks.Unlock(oid)
	if err != nil {
		t.Fatal(err)
	}
	peer.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := peer.reads.Load(); n != 1 {
		t.Fatalf("%d peer reads, want 1 (the copy here exists)", n)
	}
	got := make([]byte, 5)
	if err := st.ReadAt(ctx, oid, got, 0); err != nil || string(got) != "newer" {
		t.Fatalf("stored %q, %v; want the newer copy kept", got, err)
	}
}

// TestRecoverOneLocksAfterRetries: under a writer on every read, recovery
// ends up reading with the lock held, and so makes progress.
func TestRecoverOneLocksAfterRetries(t *testing.T) {
	rec, _, locks, peer, oid := fetchEnv(t)
	done := make(chan error, 1)
	go func() {
		done <- rec.recoverOne(context.Background(), Fetch{Oid: oid, Sources: []proto.Node{node(7001)}}, 2)
	}()
	for i := 0; i < store.LockFreeReads; i++ {
		<-peer.entered
		lockWithin(t, locks, oid)
		locks.Unlock(oid)
		peer.release <- struct{}{}
	}
	<-peer.entered // the locked read
	held := make(chan struct{})
	go func() { locks.Lock(oid); close(held); locks.Unlock(oid) }()
	select {
	case <-held:
		t.Fatal("the last read runs without the lock")
	case <-time.After(100 * time.Millisecond):
	}
	peer.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-held
	if n := peer.reads.Load(); n != store.LockFreeReads+1 {
		t.Fatalf("%d peer reads, want %d", n, store.LockFreeReads+1)
	}
}
