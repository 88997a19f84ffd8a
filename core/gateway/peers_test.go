package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// silentPeer accepts connections and reads requests but never answers:
// a peer whose sheep hangs, or one behind a cut that TCP has not noticed.
func silentPeer(t *testing.T) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go io.Copy(io.Discard, c)
			t.Cleanup(func() { c.Close() })
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l.Addr().String(), func() int { return len(accepted) }
}

// TestPeersDown: a request waiting on a peer that failure detection then
// declares down fails at once with a retryable error; later calls fail
// without dialling until the peer is up again.
func TestPeersDown(t *testing.T) {
	addr, dials := silentPeer(t)
	p := NewPeers()
	defer p.Close()
	done := make(chan error, 1)
	go func() {
		r := proto.NewRequest(proto.OpReadPeer)
		_, _, err := p.Call(context.Background(), addr, &r, nil, make([]byte, 8))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a call to a silent peer returned before it was declared down: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	p.Down(addr)
	select {
	case err := <-done:
		if !retryable(err) {
			t.Fatalf("call failed with %v, want a retryable error", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call still waits on a peer declared down")
	}
	before := dials()
	r := proto.NewRequest(proto.OpReadPeer)
	if _, _, err := p.Call(context.Background(), addr, &r, nil, nil); !errors.Is(err, proto.ResNetworkError) {
		t.Fatalf("call to a down peer: %v, want NETWORK_ERROR", err)
	}
	time.Sleep(50 * time.Millisecond)
	if dials() != before {
		t.Fatal("a call to a down peer dialled it")
	}
	p.Up(addr)
	if _, err := p.Get(context.Background(), addr); err != nil {
		t.Fatalf("peer up again: %v", err)
	}
}
