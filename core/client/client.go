// Package client is a pipelined Sheepdog protocol client: many requests in
// flight on one connection, replies matched by id. collie, sheepfs, the
// tests and sheeps talking to peers all use it.
package client

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// ErrClosed is returned for calls on a closed or broken connection.
var ErrClosed = errors.New("client: connection closed")

// Client is one connection to a sheep. It is safe for concurrent use.
//
// Requests are written by whichever call finds no writer at work: it
// writes every queued request in one writev and keeps going while more
// arrive (flat combining, as the NBD server writes its replies). Under
// load, concurrent calls to one peer then share syscalls; idle, a request
// goes out at once from its own call. Replies are read through a buffer,
// so that a burst of small replies costs one read.
type Client struct {
	addr string
	conn net.Conn
	br   *bufio.Reader // the reply stream (readLoop only)

	// wmu is held while a batch of requests is written. It is taken with
	// mu held (after the batch left the queue), so a call that holds
	// wmu after its request left the queue knows no write of it is
	// under way.
	wmu  sync.Mutex
	iovs [][]byte    // the writer's scratch (wmu)
	bufs net.Buffers // iovs as WriteTo consumes them (wmu; a field: no allocation per batch)

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]*pending
	queue   []*pending // requests waiting to be written (mu)
	spare   []*pending // the writer's recycled queue (mu)
	writing bool       // a writer is at work (mu)
	err     error      // set once the connection broke
	done    chan struct{}
}

type pending struct {
	hdr   [proto.HeaderSize]byte // the request header, as written
	wdata []byte                 // its payload
	rbuf  []byte
	rsp   proto.Response
	n     int
	err   error
	ch    chan struct{}
}

var pendingPool = sync.Pool{New: func() any { return &pending{ch: make(chan struct{}, 1)} }}

// Dial connects to a sheep at addr: "host:port", or a UNIX socket path
// (anything containing a '/').
func Dial(ctx context.Context, addr string) (*Client, error) {
	return Dialer{}.Dial(ctx, addr)
}

// Dialer connects to sheeps with bounds on how long a silent peer can
// hold a connection. The zero value is Dial's: a 10 s connect timeout and
// the system's TCP defaults (a peer that vanishes without a reset holds a
// request for TCP's retransmission timeout, about 15 minutes on Linux).
type Dialer struct {
	// Timeout bounds connecting (10 s when 0).
	Timeout time.Duration
	// Silence, when nonzero, bounds how long a TCP connection lives with
	// a peer that answers nothing: data sent and not acknowledged for
	// that long (TCP_USER_TIMEOUT), or no reply to keepalive probes sent
	// after Silence/4 of quiet, every Silence/4, breaks it. Calls waiting
	// on it fail with ErrClosed. A peer that is merely slow to reply
	// (its kernel acknowledges) is not affected.
	Silence time.Duration
	// TLS, when set, runs the protocol over TLS with this configuration:
	// how sheeps of a cluster with a cluster key reach each other (the
	// protocol port tells TLS from the plain protocol by the first byte).
	TLS *tls.Config
}

// Dial connects to addr as Dial does, with d's bounds.
func (d Dialer) Dial(ctx context.Context, addr string) (*Client, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	nd := net.Dialer{Timeout: cmp.Or(d.Timeout, 10*time.Second)}
	if d.Silence > 0 && network == "tcp" {
		probe := max(d.Silence/4, time.Second)
		nd.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3}
		ms := int(d.Silence / time.Millisecond)
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if d.TLS != nil {
		tc := tls.Client(conn, d.TLS)
		hctx, cancel := context.WithTimeout(ctx, nd.Timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS with %s: %w", addr, err)
		}
		conn = tc
	}
	return newClient(addr, conn), nil
}

func newClient(addr string, conn net.Conn) *Client {
	c := &Client{addr: addr, conn: conn, br: bufio.NewReaderSize(conn, 64<<10), pending: map[uint32]*pending{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

// Addr is the address the client dialled.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection; calls in flight fail with ErrClosed.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	return nil
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		close(c.done)
		c.conn.Close()
		clear(c.queue) // never written now; their calls fail below
		c.queue = c.queue[:0]
		for id, p := range c.pending {
			p.err = err
			p.ch <- struct{}{}
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
}

func (c *Client) readLoop() {
	var hb [proto.HeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		var rsp proto.Response
		rsp.Unmarshal(hb[:])
		c.mu.Lock()
		p := c.pending[rsp.ID]
		delete(c.pending, rsp.ID)
		c.mu.Unlock()
		left := int(rsp.DataLength)
		n := 0
		if p != nil {
			n = min(left, len(p.rbuf))
			if _, err := io.ReadFull(c.br, p.rbuf[:n]); err != nil {
				c.broken(p, err)
				return
			}
			left -= n
		}
		if left > 0 {
			if _, err := c.br.Discard(left); err != nil {
				c.broken(p, err)
				return
			}
		}
		if p != nil {
			p.rsp, p.n = rsp, n
			p.ch <- struct{}{}
		}
	}
}

// broken fails the connection, then p, the call whose reply was cut (or
// nil): in this order, so that p's caller cannot return and issue a new
// call before the connection is marked broken, and p (back in the pool
// once its caller returns) is not touched after the signal.
func (c *Client) broken(p *pending, err error) {
	err = fmt.Errorf("%w: %v", ErrClosed, err)
	c.fail(err)
	if p != nil {
		p.err = err
		p.ch <- struct{}{}
	}
}

// Do sends req with payload wdata (sets WRITE when wdata is non-nil) and
// waits for its reply, whose data lands in rbuf. It returns the response
// header and the number of bytes placed in rbuf. A non-success result is
// not an error here; see Call.
func (c *Client) Do(ctx context.Context, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	k, err := c.Start(ctx, req, wdata, rbuf)
	if err != nil {
		return proto.Response{}, 0, err
	}
	return k.Wait(ctx)
}

// Pending is a request sent by Start whose reply is not collected yet.
type Pending struct {
	c *Client
	p *pending
}

// Start sends req as Do does and returns without waiting for the reply:
// several requests, to one sheep or to several, can be in flight from one
// goroutine. Every Pending Start returns must be collected with Wait
// exactly once; until then wdata and rbuf belong to the request.
func (c *Client) Start(ctx context.Context, req *proto.Request, wdata, rbuf []byte) (Pending, error) {
	if err := ctx.Err(); err != nil {
		return Pending{}, err
	}
	if wdata != nil {
		req.Flags |= proto.FlagCmdWrite
		if req.Flags&proto.FlagCmdPiggyback != 0 && len(rbuf) > len(wdata) {
			// A WRITE payload is always data_length bytes (the server
			// reads that many); pad it so that the reply has room.
			wdata = append(wdata[:len(wdata):len(wdata)], make([]byte, len(rbuf)-len(wdata))...)
		}
		req.DataLength = uint32(len(wdata))
	} else {
		req.DataLength = uint32(len(rbuf))
	}
	p := pendingPool.Get().(*pending)
	p.rbuf, p.wdata, p.err, p.n = rbuf, wdata, nil, 0
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		p.rbuf, p.wdata = nil, nil
		pendingPool.Put(p)
		return Pending{}, err
	}
	c.nextID++
	req.ID = c.nextID
	c.pending[req.ID] = p
	req.Marshal(p.hdr[:])
	c.send(p) // unlocks c.mu
	return Pending{c: c, p: p}, nil
}

// Wait waits for the reply of the request Start sent, as Do does. If ctx
// ends first, the connection is closed (the reply could still land in
// rbuf later) and every other call on it fails with ErrClosed.
func (k Pending) Wait(ctx context.Context) (proto.Response, int, error) {
	c, p := k.c, k.p
	var err error
	select {
	case <-p.ch:
		err = p.err
	case <-ctx.Done():
		c.fail(fmt.Errorf("%w: a request was abandoned: %v", ErrClosed, ctx.Err()))
		<-p.ch
		err = ctx.Err()
	}
	if err != nil {
		// Failed before its reply: the request may be in a batch being
		// written (fail took it off the queue otherwise). Its payload
		// is the caller's again only once that write is over.
		c.wmu.Lock()
		c.wmu.Unlock()
		p.rbuf, p.wdata = nil, nil
		pendingPool.Put(p)
		return proto.Response{}, 0, err
	}
	// A reply means the whole request was read by the sheep: no write
	// still reads its payload.
	rsp, n := p.rsp, p.n
	p.rbuf, p.wdata = nil, nil
	pendingPool.Put(p)
	return rsp, n, nil
}

// batchPayload is the largest payload whose call waits a turn for others
// to share its writev (send).
const batchPayload = 64 << 10

// send queues p, whose header is marshalled, for writing, and writes the
// queue itself unless a writer is at work (flat combining). The caller
// holds c.mu; send releases it.
func (c *Client) send(p *pending) {
	c.queue = append(c.queue, p)
	if c.writing {
		c.mu.Unlock()
		return
	}
	c.writing = true
	if len(c.pending) > 1 && len(p.wdata) <= batchPayload {
		// Other calls are under way: give them a turn to queue their
		// requests behind this one, into the same writev. (A large
		// payload's copy costs more than a syscall: it goes at once.)
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	for len(c.queue) > 0 && c.err == nil {
		batch := c.queue
		c.queue = c.spare[:0]
		c.wmu.Lock() // before c.mu is released: see wmu
		c.mu.Unlock()
		c.iovs = c.iovs[:0]
		for _, q := range batch {
			c.iovs = append(c.iovs, q.hdr[:])
			if len(q.wdata) > 0 {
				c.iovs = append(c.iovs, q.wdata)
			}
		}
		c.bufs = net.Buffers(c.iovs)
		_, err := c.bufs.WriteTo(c.conn)
		clear(c.iovs)
		c.wmu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
		}
		c.mu.Lock()
		clear(batch)
		c.spare = batch[:0]
	}
	c.writing = false
	c.mu.Unlock()
}

// Call is Do that turns a non-success result into an error wrapping the
// proto.Result.
func (c *Client) Call(ctx context.Context, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	rsp, n, err := c.Do(ctx, req, wdata, rbuf)
	if err != nil {
		return rsp, n, err
	}
	if rsp.Result != proto.ResSuccess {
		return rsp, n, rsp.Result
	}
	return rsp, n, nil
}
