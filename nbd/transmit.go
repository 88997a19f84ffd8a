package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/internal/combine"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
)

// conn is one client connection.
type conn struct {
	srv  *Server
	gate *netlimit.Gate
	raw  net.Conn // the accepted socket: closed and given deadlines from other goroutines
	nc   net.Conn // raw, or TLS over it after NBD_OPT_STARTTLS (the connection's goroutines only)
	tls  bool     // nc is TLS
	br   *bufio.Reader
	peer string

	// Negotiated during the handshake, read-only afterwards.
	noZeroes       bool
	structured     bool
	baseAllocation bool   // base:allocation selected ...
	metaExport     string // ... for this export name

	// Replies are written by flat combining (internal/combine): under
	// load, many share one writev; idle, a reply goes out at once from
	// its own request.
	replies combine.Queue[*request]
	iovs    [][]byte    // the writer's scratch (the replies' writer only)
	held    []*request  // inline READs answered, replies not yet queued (the reader only)
	bufs    net.Buffers // iovs as WriteTo consumes them (a field: no allocation per batch)
	dead    atomic.Bool // a reply write failed; the socket is closed

	// Requests run on long-lived workers, so that their stacks have
	// grown once rather than on every request.
	work     chan *request
	workers  int              // started so far (reader only)
	inflight chan struct{}    // one token per request read and not yet answered
	bytes    budget           // data buffers of the requests in flight
	shared   *netlimit.Budget // the sheep's budget, also charged for them
	reqs     sync.WaitGroup
}

// maxBytesInFlight bounds the READ and WRITE data one connection holds at
// once (MaxInFlight requests of maxPayload would be 2 GiB).
const maxBytesInFlight = 256 << 20

// budget is a byte count taken by the reader and given back by whoever
// finishes a request.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	free int64
	size int64
}

func (b *budget) init(n int64) { b.free, b.size, b.cond.L = n, n, &b.mu }

func (b *budget) take(n int64) {
	b.mu.Lock()
	for b.free < n {
		b.cond.Wait()
	}
	b.free -= n
	b.mu.Unlock()
}

// has reports whether take(n) would not wait. Only the reader takes, so
// the answer holds until it does.
func (b *budget) has(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.free >= n
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Signal()
}

func newConn(s *Server, g *netlimit.Gate, nc net.Conn) *conn {
	c := &conn{
		srv: s, gate: g, raw: nc, nc: nc, peer: nc.RemoteAddr().String(), shared: s.cfg.Limits.Budget,
		br:       bufio.NewReaderSize(nc, 64<<10),
		inflight: make(chan struct{}, s.cfg.MaxInFlight),
		work:     make(chan *request),
	}
	perConn := int64(maxBytesInFlight)
	if n := s.cfg.Limits.PerConn; n > 0 {
		perConn = min(n, perConn)
	}
	c.bytes.init(perConn)
	return c
}

// stopReading makes the reader give up (Shutdown): a read deadline in the
// past fails the pending and every later read, while replies still go out.
func (c *conn) stopReading() { c.raw.SetReadDeadline(time.Unix(1, 0)) }

// serve runs the connection: handshake, then transmission until the client
// disconnects or the server stops. It returns after every request it read
// has been answered.
func (c *conn) serve() {
	defer c.raw.Close()
	e, err := c.handshake()
	if err != nil {
		if !errors.Is(err, errAbort) && !errors.Is(err, io.EOF) && !c.srv.closed() {
			c.gate.Log().Info("nbd handshake ended", "peer", c.peer, "err", err)
		}
		return
	}
	// Negotiated: lift the deadline Accept set, unless Shutdown has set
	// its own meanwhile.
	c.gate.Spoke(c.raw)
	if c.srv.closed() {
		c.stopReading()
	}
	defer c.srv.closeExport(e)
	c.srv.log.Debug("nbd transmission", "peer", c.peer, "export", e.name,
		"vid", fmt.Sprintf("%x", e.cur.Load().vid), "read_only", e.readOnly, "structured", c.structured)
	if err := c.transmit(e); err != nil && !c.srv.closed() && !c.dead.Load() {
		c.gate.Log().Info("nbd connection ended", "peer", c.peer, "export", e.name, "err", err)
	}
}

// request is one transmission-phase request and the scratch space of its
// reply; requests are pooled.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
	data   *[]byte // WRITE payload or READ result, from the buffer pool
	charge int64   // bytes taken from conn.bytes for data
	shared int64   // bytes taken from conn.shared

	hdr  [structReplyLen + 8]byte // reply header (+ the offset of OFFSET_DATA)
	iov  [2][]byte                // the reply: iov[:niov]
	niov int
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// transmit reads requests until NBD_CMD_DISC, EOF or an unrecoverable
// protocol error, hands each to a worker, and waits until every one has
// been answered before returning.
func (c *conn) transmit(e *export) error {
	defer func() {
		c.flushHeld()
		c.reqs.Wait()
		close(c.work)
	}()
	var h [requestLen]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if m := be.Uint32(h[0:]); m != magicRequest {
			return fmt.Errorf("bad request magic %#x", m)
		}
		r := requestPool.Get().(*request)
		r.flags, r.typ = be.Uint16(h[4:]), be.Uint16(h[6:])
		r.cookie, r.offset, r.length = be.Uint64(h[8:]), be.Uint64(h[16:]), be.Uint32(h[24:])
		r.data = nil
		if r.typ == cmdDisc {
			requestPool.Put(r)
			return nil
		}
		if len(c.held) > 0 && (r.typ != cmdRead || r.length > inlineMax || len(c.inflight) == cap(c.inflight)) {
			c.flushHeld()
		}
		c.inflight <- struct{}{}
		c.reqs.Add(1)
		r.charge, r.shared = 0, 0
		if (r.typ == cmdRead || r.typ == cmdWrite) && r.length <= maxPayload {
			r.charge = min(int64(r.length), c.bytes.size)
			if len(c.held) > 0 && !c.bytes.has(r.charge) {
				c.flushHeld()
			}
			c.bytes.take(r.charge)
			var ok bool
			if r.shared, ok = c.shared.TryAcquire(r.charge); !ok {
				c.flushHeld()
				var err error
				if r.shared, err = c.shared.Acquire(c.srv.ctx, r.charge); err != nil {
					c.release(r)
					return err
				}
			}
		}
		if r.typ == cmdRead && c.readInline(e, r) {
			continue
		}
		c.flushHeld()
		if r.typ == cmdWrite {
			if r.length > maxPayload {
				// The payload cannot be skipped without reading it all;
				// a client sending this ignored our block size limit.
				c.sendError(r, errInval, fmt.Errorf("write of %d bytes exceeds the maximum %d", r.length, maxPayload))
				return fmt.Errorf("write of %d bytes", r.length)
			}
			r.data = getBuf(int(r.length))
			if _, err := io.ReadFull(c.br, *r.data); err != nil {
				c.release(r)
				return fmt.Errorf("write payload: %w", err)
			}
		}
		c.dispatch(e, r)
	}
}

// inlineMax is the largest READ the reader tries to serve itself.
const inlineMax = 128 << 10

// readInline serves the READ r on the reader goroutine when the volume can
// answer it at once (volume.Volume.TryReadAt: this node's copy, every
// byte in the page cache, no writer holding it), and reports whether it
// did. Handing a read to a worker wakes a goroutine and often a thread
// for it, about a third of the CPU of a cached 4 KiB read measured on
// one node; a read that would wait for the disk, a peer or a lock still
// goes to a worker, so the reader never stops reading requests for one.
// Anything unusual (flags, range, a snapshot moved under the export) is
// left to the worker's full checks.
func (c *conn) readInline(e *export, r *request) bool {
	if r.length == 0 || r.length > inlineMax || r.flags&^c.allowedFlags(cmdRead) != 0 ||
		r.offset > uint64(e.size) || uint64(r.length) > uint64(e.size)-r.offset {
		return false
	}
	sv := e.cur.Load()
	if sv == nil || sv.vol == nil || !e.readOnly && sv.successor.Load() != 0 {
		return false
	}
	start := time.Now()
	r.data = getBuf(int(r.length))
	if !sv.vol.TryReadAt(*r.data, int64(r.offset)) {
		putBuf(r.data)
		r.data = nil
		return false
	}
	c.srv.observe(cmdRead, r.length, start, nil)
	c.hold(r)
	return true
}

// maxHeld bounds the inline READ replies the reader holds back.
const maxHeld = 16

// hold keeps the reply of the inline READ r back while the next request
// header is already in the reader's buffer (a client at queue depth
// sends its requests together), so that the replies of a run of inline
// reads go out in one writev: one syscall and one wakeup of the client
// instead of one each. Measured on one node, 4 KiB random reads at depth
// 32 spent 55% of the sheep's CPU in per-reply writev.
//
// Invariant: the reader never waits with replies held, since what it
// waits for may be those replies (a client that stops sending until it
// hears back, or budget their requests hold). Before anything that may
// block (a header not yet buffered, a token, budget, a worker, a write
// payload, the end of transmission) it calls flushHeld.
func (c *conn) hold(r *request) {
	c.fillRead(r)
	c.held = append(c.held, r)
	if len(c.held) == maxHeld || c.br.Buffered() < requestLen {
		c.flushHeld()
	}
}

// flushHeld queues the held replies for writing, together.
func (c *conn) flushHeld() {
	if len(c.held) == 0 {
		return
	}
	c.replies.PushAll(c.held, false, c.writeBatch)
	clear(c.held)
	c.held = c.held[:0]
}

// dispatch hands r to an idle worker, starting one when none is idle.
// There are never more workers than MaxInFlight, since each request holds
// an inflight token until answered.
func (c *conn) dispatch(e *export, r *request) {
	select {
	case c.work <- r:
		return
	default:
	}
	if c.workers < cap(c.inflight) {
		c.workers++
		go c.worker(e)
	}
	c.work <- r
}

func (c *conn) worker(e *export) {
	for r := range c.work {
		c.run(c.srv.ctx, e, r)
	}
}

// release frees what r holds once its reply is written (or dropped).
func (c *conn) release(r *request) {
	if r.data != nil {
		putBuf(r.data)
		r.data = nil
	}
	clear(r.iov[:])
	c.bytes.give(r.charge)
	c.shared.Release(r.shared)
	requestPool.Put(r)
	<-c.inflight
	c.reqs.Done()
}

// run executes r and queues its reply. Once the reply is queued, r may be
// recycled at any moment: nothing reads it afterwards.
func (c *conn) run(ctx context.Context, e *export, r *request) {
	typ, length, start := r.typ, r.length, time.Now()
	err := c.do(ctx, e, r)
	c.srv.observe(typ, length, start, err)
	if err != nil {
		errno := errnoOf(err)
		var re *requestError
		if errors.As(err, &re) {
			errno = re.errno
		}
		if errno == errIO || errno == errNoMem {
			c.srv.log.Warn("nbd request failed", "peer", c.peer, "export", e.name, "cmd", r.typ,
				"offset", r.offset, "length", r.length, "err", err)
		}
		c.sendError(r, errno, err)
		return
	}
	switch typ {
	case cmdRead:
		c.sendRead(r)
	case cmdBlockStatus:
		// do replied already.
	default:
		c.sendOK(r)
	}
}

// requestError is a request refused before it reached the volume.
type requestError struct {
	errno uint32
	msg   string
}

func (e *requestError) Error() string { return e.msg }

func refuse(errno uint32, format string, args ...any) error {
	return &requestError{errno: errno, msg: fmt.Sprintf(format, args...)}
}

// allowedFlags are the command flags valid for a command (FUA is valid on
// every command: the NBD protocol, "Command flags").
func (c *conn) allowedFlags(typ uint16) uint16 {
	switch typ {
	case cmdRead:
		if c.structured {
			return cmdFlagFUA | cmdFlagDF
		}
	case cmdWriteZeroes:
		return cmdFlagFUA | cmdFlagNoHole
	case cmdBlockStatus:
		return cmdFlagFUA | cmdFlagReqOne
	}
	return cmdFlagFUA
}

// do executes r against the export's volume. A READ leaves its data in
// r.data; a BLOCK_STATUS sends its own reply.
func (c *conn) do(ctx context.Context, e *export, r *request) error {
	if bad := r.flags &^ c.allowedFlags(r.typ); bad != 0 {
		return refuse(errInval, "command %d: unsupported flags %#x", r.typ, bad)
	}
	inside := r.offset <= uint64(e.size) && uint64(r.length) <= uint64(e.size)-r.offset
	off, n := int64(r.offset), int64(r.length)
	switch r.typ {
	case cmdRead:
		if r.length > maxPayload {
			return refuse(errInval, "read of %d bytes exceeds the maximum %d", r.length, maxPayload)
		}
		if !inside {
			return refuse(errInval, "read [%d,+%d) beyond the export size %d", r.offset, r.length, e.size)
		}
		r.data = getBuf(int(r.length))
		sv, err := c.srv.volume(ctx, e)
		if err != nil {
			return err
		}
		_, err = sv.vol.ReadAtContext(ctx, *r.data, off)
		return err

	case cmdWrite:
		if e.readOnly {
			return refuse(errPerm, "export %q is read-only", e.name)
		}
		if !inside {
			return refuse(errNoSpc, "write [%d,+%d) beyond the export size %d", r.offset, r.length, e.size)
		}
		return c.mutate(ctx, e, r, func(v *volume.Volume) error {
			var err error
			if r.flags&cmdFlagFUA != 0 {
				_, err = v.WriteAtFUA(ctx, *r.data, off)
			} else {
				_, err = v.WriteAtContext(ctx, *r.data, off)
			}
			return err
		})

	case cmdFlush:
		// Every write acknowledged before the FLUSH arrived, on any
		// connection of this server: Flush covers them all.
		sv, err := c.srv.volume(ctx, e)
		if err != nil {
			return err
		}
		return sv.vol.Flush(ctx)

	case cmdTrim:
		if e.readOnly {
			return refuse(errPerm, "export %q is read-only", e.name)
		}
		if !inside {
			return refuse(errInval, "trim [%d,+%d) beyond the export size %d", r.offset, r.length, e.size)
		}
		return c.mutate(ctx, e, r, func(v *volume.Volume) error { return v.Discard(ctx, off, n) })

	case cmdWriteZeroes:
		if e.readOnly {
			return refuse(errPerm, "export %q is read-only", e.name)
		}
		if !inside {
			return refuse(errNoSpc, "write zeroes [%d,+%d) beyond the export size %d", r.offset, r.length, e.size)
		}
		noHole := r.flags&cmdFlagNoHole != 0
		return c.mutate(ctx, e, r, func(v *volume.Volume) error { return v.WriteZeroes(ctx, off, n, noHole) })

	case cmdBlockStatus:
		if !c.baseAllocation {
			return refuse(errInval, "block status without a negotiated meta context")
		}
		if r.length == 0 || !inside {
			return refuse(errInval, "block status [%d,+%d) outside the export size %d", r.offset, r.length, e.size)
		}
		sv, err := c.srv.volume(ctx, e)
		if err != nil {
			return err
		}
		// Holes reported from a stale table would make a copy skip data
		// another writer put there: read them again first.
		if err := sv.vol.Refresh(ctx, int64(r.offset), int64(r.length)); err != nil {
			return err
		}
		ext := extents(r.offset, r.length, e.objSize, sv.vol.Allocated, r.flags&cmdFlagReqOne != 0)
		c.sendBlockStatus(r, ext)
		return nil
	}
	return refuse(errInval, "command %d is not supported", r.typ)
}

// mutate runs a write-type operation. When it is refused with READONLY on
// a working VDI's export, a snapshot has been taken under us: move to the
// new working VDI and run it once more there. A TRIM or WRITE_ZEROES with
// FUA flushes before returning (a WRITE with FUA is written stable by f).
func (c *conn) mutate(ctx context.Context, e *export, r *request, f func(v *volume.Volume) error) error {
	sv, err := c.srv.volume(ctx, e)
	if err != nil {
		return err
	}
	err = f(sv.vol)
	if err != nil && errors.Is(err, proto.ResReadonly) && !e.ref.Snapshot() {
		nsv, rerr := c.srv.reload(ctx, e, sv)
		if rerr != nil {
			return fmt.Errorf("%w (and following the working VDI failed: %v)", err, rerr)
		}
		sv = nsv
		err = f(sv.vol)
	}
	if err != nil {
		return err
	}
	if r.flags&cmdFlagFUA != 0 && r.typ != cmdWrite {
		return sv.vol.Flush(ctx)
	}
	return nil
}

// extent is one block status descriptor.
type extent struct {
	length uint32
	flags  uint32
}

// extents describes [off, off+n) of a volume made of objSize-byte objects
// for base:allocation: an object that is not allocated (in this VDI or a
// parent) is a hole reading as zeros, anything else is data. Runs of equal
// status are merged; the total never exceeds n; with one, only the first
// run is returned.
func extents(off uint64, n uint32, objSize int64, allocated func(idx uint32) bool, one bool) []extent {
	var out []extent
	end := off + uint64(n)
	for p := off; p < end; {
		idx := p / uint64(objSize)
		next := min((idx+1)*uint64(objSize), end)
		var flags uint32
		if !allocated(uint32(idx)) {
			flags = stateHole | stateZero
		}
		l := uint32(next - p)
		if k := len(out); k > 0 && out[k-1].flags == flags {
			out[k-1].length += l
		} else {
			if one && k > 0 {
				break
			}
			out = append(out, extent{length: l, flags: flags})
		}
		p = next
	}
	return out
}

// Replies. Each request's reply is r.iov[:r.niov]; reply queues it and
// the request is released once it has been written. A failed write closes
// the connection (the client cannot resynchronise anyway), which also ends
// the reader; later replies are dropped.

func (c *conn) reply(r *request, iov ...[]byte) {
	r.niov = copy(r.iov[:], iov)
	c.queue(r)
}

// queue queues the reply r.iov[:r.niov]. With other requests running,
// the writer waits a turn for their replies to join its writev.
func (c *conn) queue(r *request) {
	c.replies.Push(r, len(c.inflight) > 1, c.writeBatch)
}

// writeBatch writes the replies of batch with one writev and releases
// their requests. Only the writer calls it.
func (c *conn) writeBatch(batch []*request) {
	if !c.dead.Load() {
		c.iovs = c.iovs[:0]
		for _, r := range batch {
			c.iovs = append(c.iovs, r.iov[:r.niov]...)
		}
		c.bufs = net.Buffers(c.iovs)
		c.gate.Stalled(c.nc)
		if _, err := c.bufs.WriteTo(c.nc); err != nil {
			c.dead.Store(true)
			c.raw.Close()
		}
		clear(c.iovs)
	}
	for _, r := range batch {
		c.release(r)
	}
}

// putChunkHeader fills a structured reply chunk header into b.
func putChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	be.PutUint32(b[0:], magicStructReply)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], cookie)
	be.PutUint32(b[16:], length)
}

func (c *conn) sendOK(r *request) {
	c.fillOK(r)
	c.queue(r)
}

// fillOK puts a success reply with no data in r.iov.
func (c *conn) fillOK(r *request) {
	if c.structured {
		putChunkHeader(r.hdr[:], replyFlagDone, replyTypeNone, r.cookie, 0)
		r.iov[0], r.niov = r.hdr[:structReplyLen], 1
		return
	}
	be.PutUint32(r.hdr[0:], magicSimpleReply)
	be.PutUint32(r.hdr[4:], 0)
	be.PutUint64(r.hdr[8:], r.cookie)
	r.iov[0], r.niov = r.hdr[:simpleReplyLen], 1
}

// sendRead answers a successful READ. The header goes out only now that
// all the data is in hand, so a failed read is an error reply rather than
// a torn stream.
func (c *conn) sendRead(r *request) {
	c.fillRead(r)
	c.queue(r)
}

// fillRead puts the reply of a successful READ in r.iov.
func (c *conn) fillRead(r *request) {
	data := *r.data
	if !c.structured || len(data) == 0 {
		c.fillOK(r) // a simple reply's header is an OK's; the data follows
		if len(data) > 0 {
			r.iov[1], r.niov = data, 2
		}
		return
	}
	putChunkHeader(r.hdr[:], replyFlagDone, replyTypeOffsetData, r.cookie, uint32(8+len(data)))
	be.PutUint64(r.hdr[structReplyLen:], r.offset)
	r.iov[0], r.iov[1], r.niov = r.hdr[:structReplyLen+8], data, 2
}

// sendError answers r with errno; structured replies carry the message.
func (c *conn) sendError(r *request, errno uint32, err error) {
	if !c.structured {
		be.PutUint32(r.hdr[0:], magicSimpleReply)
		be.PutUint32(r.hdr[4:], errno)
		be.PutUint64(r.hdr[8:], r.cookie)
		c.reply(r, r.hdr[:simpleReplyLen])
		return
	}
	msg := err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b := make([]byte, structReplyLen+6+len(msg))
	putChunkHeader(b, replyFlagDone, replyTypeError, r.cookie, uint32(6+len(msg)))
	be.PutUint32(b[structReplyLen:], errno)
	be.PutUint16(b[structReplyLen+4:], uint16(len(msg)))
	copy(b[structReplyLen+6:], msg)
	c.reply(r, b)
}

// sendBlockStatus answers a BLOCK_STATUS with one chunk for base:allocation.
func (c *conn) sendBlockStatus(r *request, ext []extent) {
	b := make([]byte, structReplyLen+4+8*len(ext))
	putChunkHeader(b, replyFlagDone, replyTypeBlockStatus, r.cookie, uint32(4+8*len(ext)))
	be.PutUint32(b[structReplyLen:], metaBaseAllocation)
	for i, x := range ext {
		be.PutUint32(b[structReplyLen+4+8*i:], x.length)
		be.PutUint32(b[structReplyLen+8+8*i:], x.flags)
	}
	c.reply(r, b)
}

// Data buffers come from the size-class pools of internal/bufpool, so
// that the data path does not allocate per request.
func getBuf(n int) *[]byte { return bufpool.Get(n) }

// putBuf returns b to its pool.
func putBuf(b *[]byte) { bufpool.Put(b) }
