package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// A full or failing local disk is answered at once, not retried for 30 s
// as if it were a network failure (syscall.Errno implements net.Error);
// a failed dial is retried.
func TestRetryableErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, dialErr := net.Dial("tcp", addr)
	if dialErr == nil {
		t.Skip("a closed port accepted a connection")
	}
	local := func(kind proto.Result, errno syscall.Errno) error {
		// As store.ioError wraps a failed write of an object file.
		return fmt.Errorf("store: create %016x: %w: %w", uint64(0xfd32fc00000000), kind,
			&fs.PathError{Op: "write", Path: "/store/obj/00fd32fc00000000", Err: errno})
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"local disk full", local(proto.ResNoSpace, syscall.ENOSPC), false},
		{"local quota", local(proto.ResNoSpace, syscall.EDQUOT), false},
		{"local EIO", local(proto.ResEIO, syscall.EIO), false},
		{"peer's NO_SPACE", fmt.Errorf("127.0.0.1:7003: %w", proto.ResNoSpace), false},
		{"dial refused", fmt.Errorf("127.0.0.1:7003: %w", dialErr), true},
		{"connection lost", fmt.Errorf("127.0.0.1:7003: %w: %v", proto.ResNetworkError, dialErr), true},
		{"epoch mismatch", fmt.Errorf("%w", proto.ResOldNodeVer), true},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// minorityCluster is a cluster driver whose node has lost its quorum:
// no leader to order entries, and none coming back.
type minorityCluster struct{ *fakeCluster }

func (minorityCluster) Members() []proto.Node                              { return nil }
func (minorityCluster) Quorum() bool                                       { return false }
func (minorityCluster) WaitQuorum(context.Context) error                   { return errors.New("no quorum") }
func (minorityCluster) Rejoining() bool                                    { return false }
func (minorityCluster) WaitingForJoin() bool                               { return false }
func (minorityCluster) Outside() bool                                      { return false }
func (minorityCluster) WaitMember(context.Context) error                   { return nil }
func (minorityCluster) ForceRecover(context.Context) ([]proto.Node, error) { return nil, nil }
func (minorityCluster) Leave()                                             {}

// A write admitted just before its node lost the quorum, whose peer
// copy then fails as peers do when they die (NETWORK_ERROR, retryable),
// is refused with HALT at the first retry, as admission would refuse it
// now, not retried toward the dead peer for 30 s. With the quorum, the
// same failure is retried.
func TestWriteWithoutQuorumHalts(t *testing.T) {
	ctx := context.Background()
	g, _, peer := twoNodeGateway(t)
	peer.answer(func(proto.Request) proto.Result { return proto.ResNetworkError })
	g.cluster = minorityCluster{g.cluster.(*fakeCluster)}
	oid := proto.VidToDataOid(testVid, 0)
	start := time.Now()
	err := g.CreateAndWrite(ctx, oid, 0, 0, []byte("data"), 0)
	if !errors.Is(err, proto.ResHalt) {
		t.Fatalf("write without quorum: %v, want HALT", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("refused after %v", took)
	}
	if n := len(peer.take()); n != 1 {
		t.Errorf("the peer was asked %d times, want once", n)
	}

	g.cluster = g.cluster.(minorityCluster).fakeCluster
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := g.WriteObject(wctx, oid, 0, []byte("data"), 0); errors.Is(err, proto.ResHalt) || err == nil {
		t.Fatalf("write with a quorum and a failing peer: %v, want it retried until the context ends", err)
	}
	if n := len(peer.take()); n < 2 {
		t.Errorf("with a quorum the peer was asked %d times, want retries", n)
	}
}
