package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Peers pools one pipelined connection per peer sheep: requests to a peer
// share it instead of dialling per request.
//
// Peer I/O follows membership: a peer that failure detection declares
// dead, or that a new epoch leaves out, is marked down (Down): its
// connection is closed at once, failing every request waiting on it with a
// retryable error (the gateway then retries in the epoch that replaces
// it), and calls to it fail at once, without dialling, until it is seen
// alive again (Up). Connections are dialled with Dialer, whose Silence
// bounds how long a peer that vanished without a reset (a cut cable, a
// host that lost power) can hold a request before failure detection
// does.
//
// A peer started with an IO NIC (sheep -i) is dialled there first, as
// Sheepdog's sockfd cache does: when that dial fails, the connection goes
// to the peer's main address ("fallback to non-io connection", logged)
// and the IO NIC is tried again at a dial ioRetry later. A peer is named
// by its main address throughout (Down, Up, errors) whichever it goes to.
type Peers struct {
	// Dialer dials new connections (set before the first call).
	Dialer client.Dialer
	// Route returns the IO NIC address of the peer at addr, "" for none
	// (set before the first call; nil: none).
	Route func(addr string) string
	// Log reports a fallback from a peer's IO NIC (nil: not reported).
	Log *slog.Logger

	mu       sync.Mutex
	conns    map[string]*client.Client
	down     map[string]bool
	ioFailed map[string]time.Time // peers whose IO NIC failed, and when

	namesMu sync.RWMutex
	names   map[proto.NodeID]string // Addr's answers
}

// Addr is id's address as Peers names it (id.String()), kept once made:
// every peer request names its peer, and a new string each time would be
// an allocation per request. One entry per node ever addressed.
func (p *Peers) Addr(id proto.NodeID) string {
	p.namesMu.RLock()
	a, ok := p.names[id]
	p.namesMu.RUnlock()
	if ok {
		return a
	}
	a = id.String()
	p.namesMu.Lock()
	if p.names == nil {
		p.names = map[proto.NodeID]string{}
	}
	p.names[id] = a
	p.namesMu.Unlock()
	return a
}

// ioRetry is how long connections to a peer whose IO NIC failed to
// connect go to its main address before the IO NIC is tried again.
const ioRetry = 10 * time.Second

// NewPeers returns an empty pool.
func NewPeers() *Peers {
	return &Peers{conns: map[string]*client.Client{}, down: map[string]bool{}, ioFailed: map[string]time.Time{}}
}

// dial connects to the peer at addr: to its IO NIC when it has one that
// has not failed within ioRetry, else (and when that fails) to addr.
func (p *Peers) dial(ctx context.Context, addr string) (*client.Client, error) {
	io := ""
	if p.Route != nil {
		io = p.Route(addr)
	}
	if io == "" || io == addr {
		return p.Dialer.Dial(ctx, addr)
	}
	p.mu.Lock()
	failed, ok := p.ioFailed[addr]
	p.mu.Unlock()
	if !ok || time.Since(failed) >= ioRetry {
		c, err := p.Dialer.Dial(ctx, io)
		if err == nil {
			p.mu.Lock()
			delete(p.ioFailed, addr)
			p.mu.Unlock()
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		p.mu.Lock()
		p.ioFailed[addr] = time.Now()
		p.mu.Unlock()
		if p.Log != nil {
			p.Log.Warn("fallback to non-io connection", "peer", addr, "io", io, "err", err)
		}
	}
	return p.Dialer.Dial(ctx, addr)
}

// Get returns the connection to addr, dialling it if needed.
func (p *Peers) Get(ctx context.Context, addr string) (*client.Client, error) {
	p.mu.Lock()
	c, down := p.conns[addr], p.down[addr]
	p.mu.Unlock()
	if down {
		return nil, fmt.Errorf("%w: %s is down (failure detection or the epoch)", proto.ResNetworkError, addr)
	}
	if c != nil {
		return c, nil
	}
	c, err := p.dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", proto.ResNetworkError, err)
	}
	p.mu.Lock()
	if old := p.conns[addr]; old != nil || p.down[addr] {
		p.mu.Unlock()
		c.Close()
		if old == nil {
			return nil, fmt.Errorf("%w: %s is down (failure detection or the epoch)", proto.ResNetworkError, addr)
		}
		return old, nil
	}
	p.conns[addr] = c
	p.mu.Unlock()
	return c, nil
}

// Down marks the peer at addr as failed: its connection is closed, so the
// requests waiting on it fail now (retryably), and calls to it fail
// without dialling until Up.
func (p *Peers) Down(addr string) {
	p.mu.Lock()
	p.down[addr] = true
	c := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Up ends Down: the peer at addr is alive again.
func (p *Peers) Up(addr string) {
	p.mu.Lock()
	delete(p.down, addr)
	p.mu.Unlock()
}

// Drop forgets a broken connection.
func (p *Peers) Drop(addr string, c *client.Client) {
	p.mu.Lock()
	if p.conns[addr] == c {
		delete(p.conns, addr)
	}
	p.mu.Unlock()
	c.Close()
}

// Close closes every connection.
func (p *Peers) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// Call sends req to the peer at addr; a broken connection is dropped and
// reported as NETWORK_ERROR so the caller retries.
func (p *Peers) Call(ctx context.Context, addr string, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	k, err := p.Start(ctx, addr, req, wdata, rbuf)
	if err != nil {
		return proto.Response{}, 0, err
	}
	return k.Wait(ctx)
}

// PeerCall is a request Start sent to a peer, whose reply Wait collects.
type PeerCall struct {
	p    *Peers
	addr string
	c    *client.Client
	k    client.Pending
}

// Start sends req to the peer at addr as Call does, without waiting for
// the reply: the requests of one write to several copies go out at once
// from one goroutine. Every PeerCall Start returns must be collected with
// Wait exactly once.
func (p *Peers) Start(ctx context.Context, addr string, req *proto.Request, wdata, rbuf []byte) (PeerCall, error) {
	c, err := p.Get(ctx, addr)
	if err != nil {
		return PeerCall{}, err
	}
	k, err := c.Start(ctx, req, wdata, rbuf)
	if err != nil {
		p.Drop(addr, c)
		return PeerCall{}, fmt.Errorf("%s: %w: %v", addr, proto.ResNetworkError, err)
	}
	return PeerCall{p: p, addr: addr, c: c, k: k}, nil
}

// Wait waits for the reply of k as Call does.
func (k PeerCall) Wait(ctx context.Context) (proto.Response, int, error) {
	rsp, n, err := k.k.Wait(ctx)
	if err != nil {
		k.p.Drop(k.addr, k.c)
		return rsp, n, fmt.Errorf("%s: %w: %v", k.addr, proto.ResNetworkError, err)
	}
	if rsp.Result != proto.ResSuccess {
		return rsp, n, fmt.Errorf("%s: %w", k.addr, rsp.Result)
	}
	return rsp, n, nil
}

// isNetErr reports a failure of the network: a dial, a read or write on a
// connection, a timeout. A bare errno is not one, although syscall.Errno
// implements net.Error: the local store's errors carry theirs (ENOSPC,
// EIO) under an *os.PathError, and a full or failing disk is not
// something to retry.
func isNetErr(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) {
		return false
	}
	_, bare := ne.(syscall.Errno)
	return !bare
}

func peerReq(op proto.Opcode, epoch uint32, oid uint64, off int64) proto.Request {
	r := proto.NewRequest(op)
	r.Epoch = epoch
	r.SetObj(proto.ObjArgs{Oid: oid, Offset: uint32(off)})
	return r
}

func (g *Gateway) peerRead(ctx context.Context, n proto.Node, epoch uint32, oid uint64, off int64, buf []byte) error {
	r := peerReq(proto.OpReadPeer, epoch, oid, off)
	_, got, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, buf)
	if err != nil {
		return err
	}
	if got != len(buf) {
		return fmt.Errorf("%s: short read of %016x: %w", n.NodeID, oid, proto.ResEIO)
	}
	return nil
}

// peerWrite sends a write-type peer op. Without sync the peer leaves the
// change to its next flush (FLUSH_PEER): the request carries
// proto.FlagCmdCache.
func (g *Gateway) peerWrite(ctx context.Context, n proto.Node, epoch uint32, op proto.Opcode, oid uint64, off int64, data []byte, sync bool) error {
	k, err := g.startPeerWrite(ctx, n, epoch, op, oid, off, data, sync)
	if err != nil {
		return err
	}
	_, _, err = k.Wait(ctx)
	return err
}

// startPeerWrite is peerWrite without waiting for the reply (Peers.Start).
func (g *Gateway) startPeerWrite(ctx context.Context, n proto.Node, epoch uint32, op proto.Opcode, oid uint64, off int64, data []byte, sync bool) (PeerCall, error) {
	r := peerReq(op, epoch, oid, off)
	if !sync {
		r.Flags |= proto.FlagCmdCache
	}
	if data == nil && op != proto.OpRemovePeer {
		data = []byte{}
	}
	return g.peers.Start(ctx, g.peers.Addr(n.NodeID), &r, data, nil)
}
