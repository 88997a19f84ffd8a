package tests

// The I/O connection of an open image: pipelining, replies by id, and
// QEMU's reconnect with resend (docs/qemu-client.md §0, §9).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// aioReq is one request on the I/O connection (QEMU's AIOReq).
type aioReq struct {
	hdr     sdObjHdr
	payload []byte
	udata   bool // a guest data write (re-examined on resend)
	create  bool // sent as CREATE_AND_WRITE_OBJ
	data    []byte
	done    chan aioReply
}

// reply waits for r's reply, bounded so that a lost one fails the test
// instead of hanging it.
func (r *aioReq) reply() (aioReply, error) {
	select {
	case rep := <-r.done:
		return rep, nil
	case <-time.After(2 * time.Minute):
		return aioReply{}, fmt.Errorf("%s: no reply in 2 minutes", r)
	}
}

func (r *aioReq) String() string {
	return fmt.Sprintf("op %#x id %d oid %016x", r.hdr.opcode, r.hdr.id, r.hdr.oid)
}

type aioReply struct {
	rsp  sdRsp
	data []byte
	err  error
}

// qemuIOConn is the image's long-lived I/O connection: requests pipelined,
// replies matched by id in whatever order they come, and QEMU's
// reconnect: on a lost connection, dial again and resend every request in
// flight with its original id.
type qemuIOConn struct {
	t       testing.TB
	network string
	addr    string
	img     *qemuImage

	mu       sync.Mutex // guards everything below and serialises sends
	c        net.Conn
	nextID   uint32
	inflight map[uint32]*aioReq
	closed   bool
	order    []uint32 // reply ids in arrival order
	swallow  map[uint32]chan struct{}
	cutAfter map[uint32]bool
	gen      int // connection generation, bumped by each reconnect
	reconnCh chan struct{}
}

func dialIO(t testing.TB, network, addr string, img *qemuImage) *qemuIOConn {
	t.Helper()
	c, err := qemuDial(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("I/O connection: %v", err)
	}
	ic := &qemuIOConn{t: t, network: network, addr: addr, img: img, c: c, inflight: map[uint32]*aioReq{}, swallow: map[uint32]chan struct{}{},
		cutAfter: map[uint32]bool{}, reconnCh: make(chan struct{}, 16)}
	go ic.readLoop(c, 0)
	return ic
}

// submit sends reqs back-to-back with the next ids.
func (ic *qemuIOConn) submit(reqs ...*aioReq) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for _, r := range reqs {
		r.hdr.id = ic.nextID
		ic.nextID++
		r.done = make(chan aioReply, 1)
		ic.inflight[r.hdr.id] = r
		ic.sendLocked(r)
	}
}

// resend sends r again with its id (READONLY handling).
func (ic *qemuIOConn) resend(r *aioReq) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.inflight[r.hdr.id] = r
	ic.sendLocked(r)
}

func (ic *qemuIOConn) sendLocked(r *aioReq) {
	if r.hdr.opcode == sdOpWriteObj || r.hdr.opcode == sdOpCreateAndWrite {
		r.hdr.dlen = uint32(len(r.payload))
	}
	// A failed send is a lost connection: the reader notices and the
	// reconnect resends everything in flight, this request included.
	ic.c.Write(append(r.hdr.bytes(), r.payload...))
}

// swallowReply makes the reader drop the reply to id (as a lossy proxy
// would) and keep the request in flight; the returned channel is closed
// when that reply came and was dropped.
func (ic *qemuIOConn) swallowReply(id uint32) <-chan struct{} {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ch := make(chan struct{})
	ic.swallow[id] = ch
	return ch
}

// cutAfterReply drops the reply to id and then cuts the connection.
func (ic *qemuIOConn) cutAfterReply(id uint32) <-chan struct{} {
	ch := ic.swallowReply(id)
	ic.mu.Lock()
	ic.cutAfter[id] = true
	ic.mu.Unlock()
	return ch
}

func (ic *qemuIOConn) peekNextID() uint32 {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return ic.nextID
}

func (ic *qemuIOConn) replyOrder() []uint32 {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return slices.Clone(ic.order)
}

func (ic *qemuIOConn) close() {
	ic.mu.Lock()
	ic.closed = true
	c := ic.c
	ic.mu.Unlock()
	c.Close()
}

// readLoop is QEMU's aio_read_response loop for one connection.
func (ic *qemuIOConn) readLoop(c net.Conn, gen int) {
	for {
		var rsp sdRsp
		if _, err := io.ReadFull(c, rsp[:]); err != nil {
			ic.lost(c, gen, fmt.Errorf("failed to get the header: %w", err))
			return
		}
		ic.mu.Lock()
		r := ic.inflight[rsp.id()]
		ic.mu.Unlock()
		if r == nil {
			ic.t.Errorf("reply with id %d (opcode %#x, result %#x) matches no request in flight", rsp.id(), rsp.opcode(), rsp.result())
			ic.broken(c, errors.New("cannot find aio_req"))
			return
		}
		if rsp.opcode() != r.hdr.opcode {
			ic.t.Errorf("%s: reply echoes opcode %#x", r, rsp.opcode())
		}
		var data []byte
		n := rsp.dataLength()
		if r.hdr.opcode == sdOpReadObj {
			if rsp.result() == sdResSuccess && n != r.hdr.dlen {
				ic.t.Errorf("%s: READ_OBJ of %d bytes answered with %d", r, r.hdr.dlen, n)
			}
			if rsp.result() != sdResSuccess && n != 0 {
				ic.t.Errorf("%s: error reply %#x carries %d bytes (QEMU reads them into the guest buffer)", r, rsp.result(), n)
			}
			data = make([]byte, n)
			if _, err := io.ReadFull(c, data); err != nil {
				ic.lost(c, gen, err)
				return
			}
		} else if n != 0 {
			// QEMU would take the payload for the next header.
			ic.t.Errorf("%s: reply carries data_length %d; QEMU reads none and loses the stream", r, n)
			ic.broken(c, errors.New("stream desynchronised"))
			return
		}
		ic.mu.Lock()
		if ch, ok := ic.swallow[rsp.id()]; ok {
			delete(ic.swallow, rsp.id())
			cut := ic.cutAfter[rsp.id()]
			delete(ic.cutAfter, rsp.id())
			ic.mu.Unlock()
			close(ch)
			if cut {
				c.Close()
			}
			continue
		}
		delete(ic.inflight, rsp.id())
		ic.order = append(ic.order, rsp.id())
		ic.mu.Unlock()
		r.done <- aioReply{rsp: rsp, data: data}
	}
}

// lost is QEMU's reconnect_to_sdog: dial again every
// qemuReconnectEvery, then resend each request in flight, in id order,
// with its id, data writes re-examined against the current index.
func (ic *qemuIOConn) lost(c net.Conn, gen int, why error) {
	c.Close()
	ic.mu.Lock()
	if ic.closed || gen != ic.gen {
		ic.mu.Unlock()
		return
	}
	ic.mu.Unlock()
	deadline := time.Now().Add(qemuReconnectTimeout)
	var nc net.Conn
	for {
		var err error
		nc, err = qemuDial(ic.network, ic.addr, time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			ic.failAll(fmt.Errorf("reconnect after %v: %w", why, err))
			return
		}
		time.Sleep(qemuReconnectEvery)
	}
	ic.mu.Lock()
	if ic.closed {
		ic.mu.Unlock()
		nc.Close()
		return
	}
	ic.gen++
	ic.c = nc
	go ic.readLoop(nc, ic.gen)
	ids := make([]uint32, 0, len(ic.inflight))
	for id := range ic.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		r := ic.inflight[id]
		if ic.img != nil {
			ic.img.mu.Lock()
			r.reexamine(ic.img)
			if !sdIsDataOid(r.hdr.oid) && r.hdr.oid&sdVdiBit != 0 && r.hdr.opcode == sdOpWriteObj {
				// Index updates resend the current in-memory values.
				lo := uint32((r.hdr.offset - sdInodeHeaderSize) / 4)
				r.payload = sdEncodeIndex(ic.img.index[lo : lo+uint32(len(r.payload)/4)])
			}
			ic.img.mu.Unlock()
		}
		ic.sendLocked(r)
	}
	ic.mu.Unlock()
	select {
	case ic.reconnCh <- struct{}{}:
	default:
	}
}

// broken ends the connection after a protocol violation (already
// reported): QEMU would reconnect and hit it again forever, the test fails
// every request in flight instead.
func (ic *qemuIOConn) broken(c net.Conn, err error) {
	ic.mu.Lock()
	ic.closed = true
	ic.mu.Unlock()
	c.Close()
	ic.failAll(err)
}

func (ic *qemuIOConn) failAll(err error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for id, r := range ic.inflight {
		delete(ic.inflight, id)
		r.done <- aioReply{err: err}
	}
}
