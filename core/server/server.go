// Package server is the native Sheepdog protocol listener of a sheep: it
// reads requests continuously from each connection (TCP and the UNIX socket
// in the store dir), runs them concurrently and answers in completion order,
// matched by id, as QEMU's pipelined driver expects.
package server

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/internal/combine"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
)

// maxPayload bounds a request payload: the largest thing a client writes is
// a whole inode (12.5 MB) or a whole object of the largest block size we
// accept for writes in one request. A bigger declared payload is answered
// with INVALID_PARMS and the connection is closed (its stream cannot be
// resynchronised without reading the payload).
const maxPayload = 64 << 20

// maxInFlight bounds the requests one connection may have running.
const maxInFlight = 256

// Server serves the protocol for one sheep.
type Server struct {
	h   *Handler
	log *slog.Logger
	// limits bound the connections of every listener (each has its own
	// cap); peerBudget holds the payloads of peer ops, apart from the
	// clients' budget so that no sheep's clients can starve the peer
	// requests another sheep's clients wait for (peer ops start no peer
	// ops: no cycle).
	limits     netlimit.Config
	peerBudget *netlimit.Budget
	// peerTLS: a connection whose first byte opens a TLS handshake is a
	// peer sheep; it must present a certificate of the cluster's CA
	// (clusterkey). nil: no cluster key, no TLS.
	peerTLS *tls.Config

	// base is the parent of every request's context; Close cancels it.
	base   context.Context
	cancel context.CancelFunc
	// draining: Shutdown has begun; a connection lets its requests in
	// flight finish and answer before it closes.
	draining atomic.Bool

	workers *workers // run the requests (workers.go)

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// New returns a server dispatching to h, with no limits.
func New(h *Handler, log *slog.Logger) *Server {
	s := &Server{h: h, log: log, conns: map[net.Conn]struct{}{}, workers: newWorkers(workerIdle)}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s
}

// SetLimits bounds the connections of the listeners served from now on:
// client payloads take from limits.Budget, peer-op payloads from peer (nil:
// unbounded). Call it before Serve.
func (s *Server) SetLimits(limits netlimit.Config, peer *netlimit.Budget) {
	if limits.Log == nil {
		limits.Log = s.log
	}
	s.limits, s.peerBudget = limits, peer
}

// SetPeerTLS has connections that start with a TLS handshake (sheeps of
// a cluster with a cluster key) authenticated with cfg; their requests
// count as from an authenticated peer. Call it before Serve.
func (s *Server) SetPeerTLS(cfg *tls.Config) { s.peerTLS = cfg }

// tlsRecordHandshake is the first byte of a TLS connection (a handshake
// record). The protocol's first byte is its version (0x01-0x02, or 0x0a
// between sheeps), so the two never meet.
const tlsRecordHandshake = 0x16

// Serve accepts connections on l until Close. It returns nil after Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	name := "native"
	if _, ok := l.(*net.UnixListener); ok {
		name = "native-unix"
	}
	g := netlimit.NewGate(name, s.limits)
	for {
		c, err := g.Accept(l)
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			s.log.Error("native listener stopped", "addr", l.Addr().String(), "err", err)
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			g.Done()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(g, c)
	}
}

// Close stops the listeners, cancels the requests in flight and closes
// every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.closeListenersLocked()
	s.cancel()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Shutdown stops the server gracefully: it closes the listeners, reads no
// further request, lets the requests already read finish and their
// replies go out, then closes the connections. If ctx ends first, it
// closes everything at once (Close) and returns ctx's error. Serve
// returns nil either way.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	s.closeListenersLocked()
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // wakes the reader; requests go on
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// closeListenersLocked marks the server closed and closes its listeners
// (removing a UNIX socket's file). s.mu must be held.
func (s *Server) closeListenersLocked() {
	s.closed = true
	for _, l := range s.listeners {
		l.Close()
		if ul, ok := l.(*net.UnixListener); ok {
			os.Remove(ul.Addr().String())
		}
	}
	s.listeners = nil
}

// conn is one client connection.
//
// Replies are written by flat combining (internal/combine), as the NBD
// server writes its: under load, many share one writev; idle, a reply
// goes out at once from its own request. A reply's buffers and budget
// are given back once it is written.
type conn struct {
	c       net.Conn
	gate    *netlimit.Gate
	replies combine.Queue[*outReply]
	iovs    [][]byte    // the writer's scratch
	bufs    net.Buffers // iovs as WriteTo consumes them (a field: no allocation per batch)
	dead    atomic.Bool
	inflt   chan struct{}
	peer    string
	// authPeer: the connection authenticated as a peer (peerTLS).
	authPeer bool
}

// outReply is a reply waiting to be written, and what to give back once
// it is: the handler's release (of out) and the payload's budget.
type outReply struct {
	hdr                   [proto.HeaderSize]byte
	out                   []byte
	release               func()
	own, shared           *netlimit.Budget
	ownTaken, sharedTaken int64
}

var outReplyPool = sync.Pool{New: func() any { return new(outReply) }}

// done gives back what r holds and r itself.
func (r *outReply) done() {
	if r.release != nil {
		r.release()
	}
	r.own.Release(r.ownTaken)
	r.shared.Release(r.sharedTaken)
	*r = outReply{}
	outReplyPool.Put(r)
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// upgrade turns a connection that opened with a TLS handshake (its
// first header's bytes in hb) into the TLS connection of an
// authenticated peer, or fails.
func (s *Server) upgrade(c net.Conn, hb []byte, timeout time.Duration) (net.Conn, error) {
	tc := tls.Server(&prefixConn{Conn: c, pre: append([]byte(nil), hb...)}, s.peerTLS)
	ctx, cancel := context.WithTimeout(s.base, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

func (s *Server) serveConn(g *netlimit.Gate, c net.Conn) {
	defer s.wg.Done()
	defer g.Done()
	cn := &conn{c: c, gate: g, inflt: make(chan struct{}, maxInFlight), peer: c.RemoteAddr().String()}
	ctx, cancel := context.WithCancel(s.base)
	var reqs sync.WaitGroup
	defer func() {
		if s.draining.Load() {
			reqs.Wait() // Shutdown: the requests read are answered first
		}
		cancel()
		c.Close()
		reqs.Wait()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	// Every payload, in or out, is charged to this connection's share and
	// to the sheep's budget before it is read or produced, and given back
	// once its reply is written: a client that does not read its replies
	// stops being read from once its share is used up.
	lim := g.Config()
	var own *netlimit.Budget
	if lim.PerConn > 0 {
		own = netlimit.NewBudget(lim.PerConn)
	}
	var hb [proto.HeaderSize]byte
	// The first header is read straight from the socket (it may open a
	// TLS handshake); the rest through a buffer, so that a burst of
	// small requests costs one read.
	var rd io.Reader = c
	for first := true; ; first = false {
		if _, err := io.ReadFull(rd, hb[:]); err != nil {
			if first && isTimeout(err) {
				g.Log().Info("connection sent nothing; closed", "peer", cn.peer, "after", lim.IdleTimeout)
			} else if !errors.Is(err, io.EOF) && !cn.dead.Load() {
				s.log.Debug("connection read", "peer", cn.peer, "err", err)
			}
			return
		}
		if first && hb[0] == tlsRecordHandshake && s.peerTLS != nil && !cn.authPeer {
			tc, err := s.upgrade(c, hb[:], cmp.Or(lim.IdleTimeout, 10*time.Second))
			if err != nil {
				g.Log().Warn("peer TLS refused: not a sheep of this cluster (another cluster key, or none)", "peer", cn.peer, "err", err)
				return
			}
			c, cn.c, cn.authPeer = tc, tc, true
			first = true
			if _, err := io.ReadFull(c, hb[:]); err != nil {
				return
			}
		}
		if first {
			g.Spoke(c)
			rd = bufio.NewReaderSize(c, 32<<10)
		}
		t := taskPool.Get().(*task)
		t.s, t.cn, t.ctx, t.reqs = s, cn, ctx, &reqs
		req := &t.req
		req.Unmarshal(hb[:])
		if req.Flags&proto.FlagCmdWrite != 0 && req.DataLength > maxPayload {
			g.Log().Warn("request payload too large; closing connection", "peer", cn.peer, "op", fmt.Sprintf("%#x", req.Opcode), "len", req.DataLength)
			cn.reply(req, proto.Response{Result: proto.ResInvalidParms}, nil, s.h.epoch(), nil)
			reqs.Wait() // the reply may be queued behind those in flight
			return
		}
		shared := lim.Budget
		if isPeerOp(req.Opcode) || req.Opcode == proto.OpClusterPropose {
			shared = s.peerBudget
		}
		charge := int64(min(req.DataLength, maxPayload))
		ownTaken, err := own.Acquire(ctx, charge)
		if err != nil {
			return
		}
		sharedTaken, err := shared.Acquire(ctx, charge)
		if err != nil {
			own.Release(ownTaken)
			return
		}
		t.own, t.ownTaken, t.shared, t.sharedTaken = own, ownTaken, shared, sharedTaken
		if req.Flags&proto.FlagCmdWrite != 0 && req.DataLength > 0 {
			// Payload buffers come from internal/bufpool: the data path
			// does not allocate per request.
			t.dp = bufpool.Get(int(req.DataLength))
			t.data = *t.dp
			// The payload holds budget while it trickles in: it must
			// arrive within the stall timeout. One already read into rd
			// needs no deadline (setting and clearing one costs two
			// timer updates per request).
			stall := lim.StallTimeout > 0 && buffered(rd) < len(t.data)
			if stall {
				c.SetReadDeadline(time.Now().Add(lim.StallTimeout))
			}
			_, err := io.ReadFull(rd, t.data)
			if stall {
				c.SetReadDeadline(time.Time{})
			}
			if err != nil {
				bufpool.Put(t.dp)
				own.Release(ownTaken)
				shared.Release(sharedTaken)
				s.log.Debug("truncated payload", "peer", cn.peer, "err", err)
				return
			}
		}
		cn.inflt <- struct{}{}
		reqs.Add(1)
		s.workers.run(t)
	}
}

// task is a request read from a connection, with its payload and the
// budget it holds, for a worker to run. Tasks are pooled: the request path
// allocates none (a closure over the request was several allocations).
type task struct {
	s    *Server
	cn   *conn
	ctx  context.Context
	reqs *sync.WaitGroup
	req  proto.Request
	data []byte
	dp   *[]byte // data's pooled buffer

	own, shared           *netlimit.Budget
	ownTaken, sharedTaken int64
}

var taskPool = sync.Pool{New: func() any { return new(task) }}

// run handles t, queues its reply and gives t back to the pool.
func (t *task) run() {
	s, cn, reqs := t.s, t.cn, t.reqs
	defer reqs.Done()
	defer func() { <-cn.inflt }()
	rsp, out, release := s.h.Handle(t.ctx, &t.req, t.data, cn.peer, cn.authPeer)
	if t.dp != nil {
		bufpool.Put(t.dp)
	}
	if rsp.Result == proto.ResWaitForJoin && clientIO(t.req.Opcode) && s.h.outside() {
		// QEMU turns any error on I/O into EIO in the guest, but
		// resends every request in flight over a new connection
		// once one is lost (docs/qemu-client.md §9): for a node
		// the cluster left out, closing is the retry QEMU knows.
		// (Not for a restarted node that waits for its log: a
		// resend there could come before the log is applied.)
		cn.dead.Store(true)
		cn.c.Close()
	}
	r := outReplyPool.Get().(*outReply)
	r.release, r.own, r.ownTaken, r.shared, r.sharedTaken = release, t.own, t.ownTaken, t.shared, t.sharedTaken
	cn.reply(&t.req, rsp, out, s.h.epoch(), r)
	*t = task{}
	taskPool.Put(t)
}

// buffered is how many bytes r holds already read.
func buffered(r io.Reader) int {
	if b, ok := r.(*bufio.Reader); ok {
		return b.Buffered()
	}
	return 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reply sends rsp (and out) for req; r (nil: one from the pool, holding
// nothing) carries what to give back once it is written. Invariant: never
// more payload than req.DataLength, whatever the handler produced.
func (cn *conn) reply(req *proto.Request, rsp proto.Response, out []byte, epoch uint32, r *outReply) {
	if r == nil {
		r = outReplyPool.Get().(*outReply)
	}
	if uint32(len(out)) > req.DataLength {
		out = out[:req.DataLength]
	}
	rsp.ProtoVer, rsp.Flags = 0, 0
	rsp.Opcode = req.Opcode
	rsp.ID = req.ID
	rsp.Epoch = epoch
	rsp.DataLength = uint32(len(out))
	rsp.Marshal(r.hdr[:])
	r.out = out
	// With other requests running, the writer waits a turn for their
	// replies to join its writev (under 4 KiB writes at depth 32, one
	// writev per reply was a fifth of a replica's CPU).
	cn.replies.Push(r, len(cn.inflt) > 1, cn.writeBatch)
}

// writeBatch writes the replies of batch with one writev (none once a
// write failed: the connection is closed) and gives back what they hold.
// Only the writer calls it.
func (cn *conn) writeBatch(batch []*outReply) {
	if !cn.dead.Load() {
		cn.iovs = cn.iovs[:0]
		for _, r := range batch {
			cn.iovs = append(cn.iovs, r.hdr[:])
			if len(r.out) > 0 {
				cn.iovs = append(cn.iovs, r.out)
			}
		}
		cn.bufs = net.Buffers(cn.iovs)
		cn.gate.Stalled(cn.c)
		if _, err := cn.bufs.WriteTo(cn.c); err != nil {
			cn.dead.Store(true)
			cn.c.Close()
		}
		clear(cn.iovs)
	}
	for _, r := range batch {
		r.done()
	}
}
