package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
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

// A peer with an IO NIC is dialled there; when the IO NIC cannot be
// reached the connection goes to the peer's main address, the fallback is
// logged as Sheepdog's sheep logs it, and the next dials within ioRetry go
// straight to the main address.
func TestPeersIONicFallback(t *testing.T) {
	main, mainDials := silentPeer(t)
	io, ioDials := silentPeer(t)
	route := io
	var logs bytes.Buffer
	p := NewPeers()
	defer p.Close()
	p.Route = func(addr string) string {
		if addr == main {
			return route
		}
		return ""
	}
	p.Log = slog.New(slog.NewTextHandler(&logs, nil))
	waitDials := func(what string, dials func() int, want int) {
		t.Helper()
		for end := time.Now().Add(2 * time.Second); dials() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s accepted %d connections, want %d", what, dials(), want)
			}
		}
	}
	c, err := p.Get(context.Background(), main)
	if err != nil {
		t.Fatal(err)
	}
	waitDials("the IO NIC", ioDials, 1)
	waitDials("the main address", mainDials, 0)

	// The IO NIC goes away: a closed port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	route = l.Addr().String()
	l.Close()
	p.Drop(main, c)
	if c, err = p.Get(context.Background(), main); err != nil {
		t.Fatalf("no fallback to the main address: %v", err)
	}
	waitDials("the main address", mainDials, 1)
	if !strings.Contains(logs.String(), "fallback to non-io connection") {
		t.Fatalf("fallback not logged: %q", logs.String())
	}
	logs.Reset()
	p.Drop(main, c)
	if _, err = p.Get(context.Background(), main); err != nil {
		t.Fatal(err)
	}
	waitDials("the main address", mainDials, 2)
	if logs.Len() != 0 {
		t.Fatalf("the failed IO NIC was dialled again within ioRetry: %q", logs.String())
	}
}
