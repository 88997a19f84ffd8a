package nbd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// memObjects is an in-memory object layer with the gateway's checks that
// matter here: writes to a missing object fail, data objects of a
// snapshot are read-only.
type memObjects struct {
	mu       sync.Mutex
	objs     map[uint64][]byte
	shift    uint8
	readonly map[uint32]bool
	failRead map[uint64]bool
	block    chan struct{} // when set, reads wait on it
	flushes  atomic.Int64
	// Object writes and creates with proto.FlagCmdCache (write-back) and
	// without (stable when they return).
	cached, stable atomic.Int64
	// tried counts the reads TryReadObject served; noTry makes it refuse.
	tried atomic.Int64
	noTry atomic.Bool
}

// TryReadObject serves what ReadObject would at once, unless noTry is set,
// reads block or fail, or the object is missing: then the reader must
// hand the request to a worker.
func (m *memObjects) TryReadObject(oid uint64, off int64, buf []byte) bool {
	if m.noTry.Load() {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[oid]
	if m.block != nil || m.failRead[oid] || !ok || off+int64(len(buf)) > int64(len(o)) {
		return false
	}
	copy(buf, o[off:])
	m.tried.Add(1)
	return true
}

func (m *memObjects) count(flags uint16) {
	if flags&proto.FlagCmdCache != 0 {
		m.cached.Add(1)
	} else {
		m.stable.Add(1)
	}
}

func newMemObjects() *memObjects {
	return &memObjects{objs: map[uint64][]byte{}, shift: 20, readonly: map[uint32]bool{}, failRead: map[uint64]bool{}}
}

func (m *memObjects) size(oid uint64) int64 { return proto.ObjectSize(oid, m.shift) }

func (m *memObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	m.mu.Lock()
	block := m.block
	m.mu.Unlock()
	if block != nil {
		<-block
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failRead[oid] {
		return fmt.Errorf("read %016x: %w", oid, proto.ResEIO)
	}
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("read %016x: %w", oid, proto.ResNoObj)
	}
	if off+int64(len(buf)) > int64(len(o)) {
		return proto.ResInvalidParms
	}
	copy(buf, o[off:])
	return nil
}

func (m *memObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	m.count(flags)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readonly[proto.OidToVid(oid)] && !proto.IsVdiObj(oid) {
		return fmt.Errorf("write %016x: %w", oid, proto.ResReadonly)
	}
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("write %016x: %w", oid, proto.ResNoObj)
	}
	if off+int64(len(data)) > int64(len(o)) {
		return proto.ResInvalidParms
	}
	copy(o[off:], data)
	return nil
}

func (m *memObjects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	m.count(flags)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readonly[proto.OidToVid(oid)] && !proto.IsVdiObj(oid) {
		return fmt.Errorf("create %016x: %w", oid, proto.ResReadonly)
	}
	o := make([]byte, m.size(oid))
	if cowFrom != 0 {
		src, ok := m.objs[cowFrom]
		if !ok {
			return proto.ResNoObj
		}
		copy(o, src)
	}
	copy(o[off:], data)
	m.objs[oid] = o
	return nil
}

func (m *memObjects) RemoveObject(ctx context.Context, oid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[oid]; !ok {
		return proto.ResNoObj
	}
	delete(m.objs, oid)
	return nil
}

func (m *memObjects) Flush(ctx context.Context) error { m.flushes.Add(1); return nil }

func (m *memObjects) has(oid uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objs[oid]
	return ok
}

// cluster is a fake of what a sheep gives the server: VDIs in memObjects
// and a Lookup over them.
type cluster struct {
	objs *memObjects
	mu   sync.Mutex
	vids []uint32
}

func (c *cluster) writeInode(ino *proto.Inode) {
	buf := make([]byte, proto.InodeSize)
	if err := ino.MarshalRange(0, buf); err != nil {
		panic(err)
	}
	c.objs.mu.Lock()
	c.objs.objs[proto.VidToVdiOid(ino.VdiID)] = buf
	c.objs.mu.Unlock()
	c.mu.Lock()
	if !slices.Contains(c.vids, ino.VdiID) {
		c.vids = append(c.vids, ino.VdiID)
	}
	c.mu.Unlock()
}

func (c *cluster) inode(vid uint32) *proto.Inode {
	buf := make([]byte, proto.GrefOffset)
	if err := c.objs.ReadObject(context.Background(), proto.VidToVdiOid(vid), 0, buf); err != nil {
		panic(err)
	}
	var ino proto.Inode
	ino.UnmarshalRange(0, buf)
	return &ino
}

func (c *cluster) create(name string, vid uint32, size uint64) {
	c.writeInode(&proto.Inode{Name: name, VdiSize: size, VdiID: vid, SnapID: 1, BlockSizeShift: c.objs.shift, NrCopies: 1})
}

// snapshot turns the working VDI old into a snapshot (tagged) and makes
// newVid the working VDI with the same table, as vdi.Service.New does.
func (c *cluster) snapshot(old, newVid uint32, tag string) {
	ino := c.inode(old)
	ino.SnapCtime, ino.Tag = 1, tag
	c.writeInode(ino)
	c.objs.mu.Lock()
	c.objs.readonly[old] = true
	c.objs.mu.Unlock()
	work := *ino
	work.SnapCtime, work.Tag, work.VdiID, work.SnapID, work.ParentVdiID = 0, "", newVid, ino.SnapID+1, old
	c.writeInode(&work)
}

func (c *cluster) Vids() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.vids)
}

func (c *cluster) Lookup(ctx context.Context, name, tag string, snapid uint32) (uint32, error) {
	var found bool
	for _, vid := range c.Vids() {
		ino := c.inode(vid)
		if ino.Name != name {
			continue
		}
		found = true
		if tag == "" && snapid == 0 && !ino.IsSnapshot() {
			return vid, nil
		}
		if ino.IsSnapshot() && ((tag != "" && ino.Tag == tag) || (snapid != 0 && ino.SnapID == snapid)) {
			return vid, nil
		}
	}
	if found && (tag != "" || snapid != 0) {
		return 0, fmt.Errorf("%q: %w", name, proto.ResNoTag)
	}
	return 0, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
}

// startServer serves a fresh fake cluster on a loopback port.
func startServer(t *testing.T) (*Server, *cluster, string) {
	t.Helper()
	cl := &cluster{objs: newMemObjects()}
	s := New(Config{Objects: cl.objs, Lookup: cl.Lookup, Vids: cl.Vids})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, cl, l.Addr().String()
}

// client is a minimal NBD client, enough to drive every path of the
// server (the end-to-end tests use the real ones).
type client struct {
	t          *testing.T
	c          net.Conn
	br         *bufio.Reader
	wmu        sync.Mutex
	structured bool
	size       uint64
	flags      uint16
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	var hello [18]byte
	cl.read(hello[:])
	if be.Uint64(hello[0:]) != magicInit || be.Uint64(hello[8:]) != magicOption {
		t.Fatalf("bad hello %x", hello)
	}
	if f := be.Uint16(hello[16:]); f != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", f)
	}
	cl.write(be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes))
	return cl
}

func (c *client) read(b []byte) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

type optReply struct {
	typ  uint32
	data []byte
}

// option sends an option and collects its replies up to the final one.
func (c *client) option(opt uint32, data []byte) []optReply {
	c.t.Helper()
	b := be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
	var out []optReply
	for {
		var h [20]byte
		c.read(h[:])
		if be.Uint64(h[0:]) != magicOptionReply || be.Uint32(h[8:]) != opt {
			c.t.Fatalf("bad option reply header %x", h)
		}
		r := optReply{typ: be.Uint32(h[12:]), data: make([]byte, be.Uint32(h[16:]))}
		c.read(r.data)
		out = append(out, r)
		if r.typ == repAck || r.typ&repFlagError != 0 {
			return out
		}
	}
}

// goExport negotiates structured replies and base:allocation (when
// structured) and enters transmission with NBD_OPT_GO.
func (c *client) goExport(name string, structured bool) {
	c.t.Helper()
	if structured {
		if r := c.option(optStructuredReply, nil); r[0].typ != repAck {
			c.t.Fatalf("structured reply: %+v", r)
		}
		r := c.option(optSetMetaContext, metaData(name, baseAllocation))
		if len(r) != 2 || r[0].typ != repMetaContext || string(r[0].data[4:]) != baseAllocation {
			c.t.Fatalf("set meta context: %+v", r)
		}
		c.structured = true
	}
	rs := c.option(optGo, infoData(name, infoBlockSize))
	last := rs[len(rs)-1]
	if last.typ != repAck {
		c.t.Fatalf("GO %q: reply %#x %q", name, last.typ, last.data)
	}
	for _, r := range rs {
		if r.typ == repInfo && be.Uint16(r.data) == infoExport {
			c.size, c.flags = be.Uint64(r.data[2:]), be.Uint16(r.data[10:])
		}
	}
}

// send queues one request.
func (c *client) send(typ, flags uint16, cookie, off uint64, length uint32, data []byte) {
	c.t.Helper()
	c.write(appendRequest(nil, typ, flags, cookie, off, length, data))
}

// appendRequest appends one request (and its payload) to b.
func appendRequest(b []byte, typ, flags uint16, cookie, off uint64, length uint32, data []byte) []byte {
	b = be.AppendUint32(b, magicRequest)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, length)
	return append(b, data...)
}

type reply struct {
	cookie  uint64
	errno   uint32
	data    []byte
	extents []extent
	msg     string
}

// recv reads one whole reply. readLen says how many data bytes a simple
// reply to each cookie carries.
func (c *client) recv(readLen func(cookie uint64) int) reply {
	c.t.Helper()
	var m [4]byte
	c.read(m[:])
	switch be.Uint32(m[:]) {
	case magicSimpleReply:
		var h [12]byte
		c.read(h[:])
		r := reply{errno: be.Uint32(h[0:]), cookie: be.Uint64(h[4:])}
		if r.errno == 0 && readLen != nil {
			r.data = make([]byte, readLen(r.cookie))
			c.read(r.data)
		}
		return r
	case magicStructReply:
		var r reply
		for {
			var h [16]byte
			c.read(h[:])
			flags, typ := be.Uint16(h[0:]), be.Uint16(h[2:])
			r.cookie = be.Uint64(h[4:])
			p := make([]byte, be.Uint32(h[12:]))
			c.read(p)
			switch typ {
			case replyTypeOffsetData:
				r.data = p[8:]
			case replyTypeBlockStatus:
				if be.Uint32(p) != metaBaseAllocation {
					c.t.Fatalf("block status for context %d", be.Uint32(p))
				}
				for i := 4; i < len(p); i += 8 {
					r.extents = append(r.extents, extent{be.Uint32(p[i:]), be.Uint32(p[i+4:])})
				}
			case replyTypeError:
				r.errno = be.Uint32(p)
				r.msg = string(p[6 : 6+be.Uint16(p[4:])])
			case replyTypeNone:
			default:
				c.t.Fatalf("unexpected chunk type %d", typ)
			}
			if flags&replyFlagDone != 0 {
				return r
			}
			var m2 [4]byte
			c.read(m2[:])
		}
	}
	c.t.Fatalf("bad reply magic %x", m)
	return reply{}
}

// do sends one request and waits for its reply.
func (c *client) do(typ, flags uint16, off uint64, length uint32, data []byte) reply {
	c.t.Helper()
	c.send(typ, flags, 7, off, length, data)
	var readLen func(uint64) int
	if typ == cmdRead {
		readLen = func(uint64) int { return int(length) }
	}
	r := c.recv(readLen)
	if r.cookie != 7 {
		c.t.Fatalf("reply for cookie %d, want 7", r.cookie)
	}
	return r
}

func (c *client) disconnect() {
	c.send(cmdDisc, 0, 0, 0, 0, nil)
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		c.t.Fatalf("after DISC: read %d bytes, %v; want EOF", n, err)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestList(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x15d167, 64<<20)
	cl.snapshot(0x15d167, 0x15d168, "daily")
	cl.create("Bob", 0x200, 8<<20)
	cl.writeInode(&proto.Inode{VdiID: 0x300, SnapID: 1}) // deleted: no name
	c := dial(t, addr)
	rs := c.option(optList, nil)
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer {
			t.Fatalf("reply %#x", r.typ)
		}
		names = append(names, string(r.data[4:4+be.Uint32(r.data)]))
	}
	if want := []string{"Alice", "Alice:1", "Alice:daily", "Bob"}; !slices.Equal(names, want) {
		t.Fatalf("list = %q, want %q", names, want)
	}
	if rs[len(rs)-1].typ != repAck {
		t.Fatalf("list ended with %#x", rs[len(rs)-1].typ)
	}
	if r := c.option(optList, []byte{1}); r[0].typ != repErrInvalid {
		t.Fatalf("LIST with data: %#x", r[0].typ)
	}
}

func TestNegotiationErrors(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	c := dial(t, addr)

	r := c.option(optGo, infoData("Nobody"))
	if r[0].typ != repErrUnknown || !bytes.Contains(r[0].data, []byte("Nobody")) {
		t.Fatalf("GO unknown export: %#x %q", r[0].typ, r[0].data)
	}
	if r := c.option(optGo, infoData("")); r[0].typ != repErrUnknown {
		t.Fatalf("GO default export: %#x", r[0].typ)
	}
	if r := c.option(optGo, []byte{0, 0, 0, 50}); r[0].typ != repErrInvalid {
		t.Fatalf("GO garbage: %#x", r[0].typ)
	}
	if r := c.option(99, []byte("x")); r[0].typ != repErrUnsup {
		t.Fatalf("unknown option: %#x", r[0].typ)
	}
	if r := c.option(optStartTLS, nil); r[0].typ != repErrUnsup {
		t.Fatalf("STARTTLS: %#x", r[0].typ)
	}
	if r := c.option(optSetMetaContext, metaData("Alice", baseAllocation)); r[0].typ != repErrInvalid {
		t.Fatalf("meta context before structured replies: %#x", r[0].typ)
	}
	c.option(optStructuredReply, nil)
	if r := c.option(optListMetaContext, metaData("Alice")); len(r) != 2 || string(r[0].data[4:]) != baseAllocation {
		t.Fatalf("list meta contexts: %+v", r)
	}
	if r := c.option(optListMetaContext, metaData("Nobody")); r[0].typ != repErrUnknown {
		t.Fatalf("meta contexts of unknown export: %#x", r[0].typ)
	}
	if r := c.option(optSetMetaContext, metaData("Alice", "qemu:dirty-bitmap:x")); len(r) != 1 || r[0].typ != repAck {
		t.Fatalf("set unknown context: %+v", r)
	}

	// INFO does not enter transmission; it reports what GO would.
	rs := c.option(optInfo, infoData("Alice", infoName, infoDescription))
	var seen []uint16
	for _, r := range rs {
		if r.typ == repInfo {
			seen = append(seen, be.Uint16(r.data))
			switch be.Uint16(r.data) {
			case infoExport:
				if be.Uint64(r.data[2:]) != 8<<20 {
					t.Errorf("size %d", be.Uint64(r.data[2:]))
				}
			case infoBlockSize:
				if min, pref, max := be.Uint32(r.data[2:]), be.Uint32(r.data[6:]), be.Uint32(r.data[10:]); min != 1 || pref != 4096 || max != 32<<20 {
					t.Errorf("block sizes %d %d %d", min, pref, max)
				}
			case infoName:
				if string(r.data[2:]) != "Alice" {
					t.Errorf("name %q", r.data[2:])
				}
			}
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []uint16{infoExport, infoName, infoDescription, infoBlockSize}) {
		t.Fatalf("INFO sent %v", seen)
	}

	// ABORT is acknowledged and ends the session.
	if r := c.option(optAbort, nil); r[0].typ != repAck {
		t.Fatalf("ABORT: %#x", r[0].typ)
	}
}

func TestExportNameOption(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	c := dial(t, addr)
	b := be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, optExportName)
	b = be.AppendUint32(b, 5)
	c.write(append(b, "Alice"...))
	var info [10]byte // NO_ZEROES was negotiated: no 124 zero bytes
	c.read(info[:])
	if be.Uint64(info[:]) != 8<<20 {
		t.Fatalf("size %d", be.Uint64(info[:]))
	}
	if f := be.Uint16(info[8:]); f&flagSendDF != 0 || f&flagReadOnly != 0 || f&flagSendFlush == 0 || f&flagCanMultiConn == 0 {
		t.Fatalf("flags %#x", f)
	}
	data := pattern(5000, 3)
	if r := c.do(cmdWrite, 0, 100, uint32(len(data)), data); r.errno != 0 {
		t.Fatalf("write: %d", r.errno)
	}
	if r := c.do(cmdRead, 0, 100, uint32(len(data)), nil); r.errno != 0 || !bytes.Equal(r.data, data) {
		t.Fatalf("read back: errno %d", r.errno)
	}
	c.disconnect()

	// An unknown export cannot be refused politely: the session ends.
	c = dial(t, addr)
	b = be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, optExportName)
	b = be.AppendUint32(b, 3)
	c.write(append(b, "Bob"...))
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("unknown export: %v, want EOF", err)
	}
}

func testTransmission(t *testing.T, structured bool) {
	_, cl, addr := startServer(t)
	const size = 16 << 20 // 16 objects of 1 MiB
	cl.create("Alice", 0x10, size)
	c := dial(t, addr)
	c.goExport("Alice", structured)
	if c.size != size {
		t.Fatalf("size %d", c.size)
	}
	want := flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim | flagSendWriteZeroes | flagCanMultiConn
	if structured {
		want |= flagSendDF
	}
	if c.flags != want {
		t.Fatalf("transmission flags %#x, want %#x", c.flags, want)
	}

	// Many writes in flight at once, including ones straddling objects;
	// replies may come in any order.
	model := make([]byte, size)
	const n = 200
	lens := map[uint64]int{}
	for i := 0; i < n; i++ {
		off := uint64(i) * (size / n)
		data := pattern(9000+i, byte(i))
		copy(model[off:], data)
		flags := uint16(0)
		if i%10 == 0 {
			flags = cmdFlagFUA
		}
		c.send(cmdWrite, flags, uint64(i), off, uint32(len(data)), data)
	}
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		r := c.recv(nil)
		if r.errno != 0 || seen[r.cookie] {
			t.Fatalf("write reply cookie %d errno %d (dup %v)", r.cookie, r.errno, seen[r.cookie])
		}
		seen[r.cookie] = true
	}
	if r := c.do(cmdFlush, 0, 0, 0, nil); r.errno != 0 {
		t.Fatalf("flush: %d", r.errno)
	}
	// FUA writes are written stable, the others write-back until the
	// FLUSH.
	if st, ca, fl := cl.objs.stable.Load(), cl.objs.cached.Load(), cl.objs.flushes.Load(); st < n/10 || ca < n-n/10 || fl < 1 {
		t.Fatalf("%d stable and %d write-back object writes, %d flushes, for %d FUA writes, %d others and a FLUSH",
			st, ca, fl, n/10, n-n/10)
	}
	// Pipelined reads of the whole device in 1 MiB + odd pieces.
	for off, i := uint64(0), uint64(0); off < size; i++ {
		l := min(uint64(1<<20+333), size-off)
		lens[i] = int(l)
		c.send(cmdRead, 0, i, off, uint32(l), nil)
		off += l
	}
	got := make([]byte, size)
	offs := map[uint64]uint64{}
	for off, i := uint64(0), uint64(0); off < size; i++ {
		offs[i] = off
		off += uint64(lens[i])
	}
	for range lens {
		r := c.recv(func(ck uint64) int { return lens[ck] })
		if r.errno != 0 || len(r.data) != lens[r.cookie] {
			t.Fatalf("read %d: errno %d, %d bytes", r.cookie, r.errno, len(r.data))
		}
		copy(got[offs[r.cookie]:], r.data)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("device content differs from what was written")
	}

	// Errors are per request; the connection goes on.
	if r := c.do(cmdRead, 0, size-10, 20, nil); r.errno != errInval {
		t.Fatalf("read beyond the end: errno %d", r.errno)
	}
	if r := c.do(cmdWrite, 0, size-10, 20, make([]byte, 20)); r.errno != errNoSpc {
		t.Fatalf("write beyond the end: errno %d", r.errno)
	}
	if r := c.do(cmdRead, 0, 0, maxPayload+1, nil); r.errno != errInval {
		t.Fatalf("read over the max: errno %d", r.errno)
	}
	if r := c.do(cmdCache, 0, 0, 512, nil); r.errno != errInval {
		t.Fatalf("CACHE: errno %d", r.errno)
	}
	if r := c.do(cmdWrite, cmdFlagReqOne, 0, 4, []byte("abcd")); r.errno != errInval {
		t.Fatalf("write with a bad flag: errno %d", r.errno)
	}
	cl.objs.mu.Lock()
	cl.objs.failRead[proto.VidToDataOid(0x10, 3)] = true
	cl.objs.mu.Unlock()
	r := c.do(cmdRead, 0, 3<<20, 4096, nil)
	if r.errno != errIO {
		t.Fatalf("failing read: errno %d", r.errno)
	}
	if structured && r.msg == "" {
		t.Fatal("structured error reply without a message")
	}
	if r := c.do(cmdRead, 0, 0, 4096, nil); r.errno != 0 || !bytes.Equal(r.data, model[:4096]) {
		t.Fatalf("read after a failed one: errno %d", r.errno)
	}
	cl.objs.mu.Lock()
	clear(cl.objs.failRead)
	cl.objs.mu.Unlock()

	// TRIM: whole objects go away, partial ranges read as zeros.
	if r := c.do(cmdTrim, 0, 1<<20-100, 2<<20+200, nil); r.errno != 0 {
		t.Fatalf("trim: %d", r.errno)
	}
	clear(model[1<<20-100 : 3<<20+100])
	if cl.objs.has(proto.VidToDataOid(0x10, 1)) || cl.objs.has(proto.VidToDataOid(0x10, 2)) {
		t.Fatal("trim kept whole objects")
	}
	// WRITE_ZEROES punches whole objects unless NO_HOLE says otherwise.
	if r := c.do(cmdWriteZeroes, 0, 4<<20, 1<<20, nil); r.errno != 0 {
		t.Fatalf("write zeroes: %d", r.errno)
	}
	if r := c.do(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 5<<20, 1<<20+10, nil); r.errno != 0 {
		t.Fatalf("write zeroes no hole: %d", r.errno)
	}
	clear(model[4<<20 : 6<<20+10])
	if cl.objs.has(proto.VidToDataOid(0x10, 4)) || !cl.objs.has(proto.VidToDataOid(0x10, 5)) {
		t.Fatal("write zeroes: object 4 should be freed, 5 kept")
	}
	r = c.do(cmdRead, 0, 0, 8<<20, nil)
	if r.errno != 0 || !bytes.Equal(r.data, model[:8<<20]) {
		t.Fatalf("read after trim/zero: errno %d, equal %v", r.errno, bytes.Equal(r.data, model[:8<<20]))
	}

	if structured {
		hz := stateHole | stateZero
		r := c.do(cmdBlockStatus, 0, 0, size, nil)
		want := []extent{{1 << 20, 0}, {2 << 20, hz}, {1 << 20, 0}, {1 << 20, hz}, {11 << 20, 0}}
		if r.errno != 0 || !slices.Equal(r.extents, want) {
			t.Fatalf("block status: errno %d %+v, want %+v", r.errno, r.extents, want)
		}
		r = c.do(cmdBlockStatus, cmdFlagReqOne, 1<<20, 8<<20, nil)
		if r.errno != 0 || !slices.Equal(r.extents, []extent{{2 << 20, hz}}) {
			t.Fatalf("block status REQ_ONE: %+v", r.extents)
		}
		if r := c.do(cmdBlockStatus, 0, size-1, 2, nil); r.errno != errInval {
			t.Fatalf("block status beyond the end: errno %d", r.errno)
		}
		if r := c.do(cmdRead, cmdFlagDF, 0, 10, nil); r.errno != 0 || len(r.data) != 10 {
			t.Fatalf("read with DF: errno %d", r.errno)
		}
		if r := c.do(cmdRead, 0, 0, 0, nil); r.errno != 0 || len(r.data) != 0 {
			t.Fatalf("empty read: errno %d", r.errno)
		}
	} else if r := c.do(cmdBlockStatus, 0, 0, size, nil); r.errno != errInval {
		t.Fatalf("block status without a meta context: errno %d", r.errno)
	}
	c.disconnect()
}

func TestTransmissionSimple(t *testing.T)     { testTransmission(t, false) }
func TestTransmissionStructured(t *testing.T) { testTransmission(t, true) }

// writtenAlice starts a server with an 8 MiB VDI Alice, connects to it
// and writes n bytes of a pattern at its start.
func writtenAlice(t *testing.T, structured bool, n int, seed byte) (*cluster, *client, string, []byte) {
	t.Helper()
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	c := dial(t, addr)
	c.goExport("Alice", structured)
	data := pattern(n, seed)
	if r := c.do(cmdWrite, 0, 0, uint32(len(data)), data); r.errno != 0 {
		t.Fatalf("write: error %d", r.errno)
	}
	return cl, c, addr, data
}

func TestSnapshotExportIsReadOnly(t *testing.T) {
	cl, c, addr, data := writtenAlice(t, true, 3<<20, 1)
	c.disconnect()
	cl.snapshot(0x10, 0x11, "before")

	for _, name := range []string{"Alice:1", "Alice:before"} {
		s := dial(t, addr)
		s.goExport(name, true)
		if s.flags&flagReadOnly == 0 || s.flags&(flagSendTrim|flagSendWriteZeroes) != 0 {
			t.Fatalf("%s: flags %#x", name, s.flags)
		}
		if r := s.do(cmdRead, 0, 0, uint32(len(data)), nil); r.errno != 0 || !bytes.Equal(r.data, data) {
			t.Fatalf("%s: read: errno %d", name, r.errno)
		}
		for _, cmd := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
			var payload []byte
			if cmd == cmdWrite {
				payload = []byte("x")
			}
			if r := s.do(cmd, 0, 0, 1, payload); r.errno != errPerm {
				t.Fatalf("%s: command %d: errno %d, want EPERM", name, cmd, r.errno)
			}
		}
		if r := s.do(cmdFlush, 0, 0, 0, nil); r.errno != 0 {
			t.Fatalf("%s: flush: %d", name, r.errno)
		}
		s.disconnect()
	}
}

// Two connections to one VDI share one volume, so an object allocated by
// one is not allocated (and overwritten with zeros) again by the other.
func TestMultiConnSharesAllocation(t *testing.T) {
	s, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	a, b := dial(t, addr), dial(t, addr)
	a.goExport("Alice", false)
	b.goExport("Alice", true)
	if s.vols.open() != 1 {
		t.Fatalf("%d volumes open for one VDI", s.vols.open())
	}
	// b reads the hole first, so that a private table would be cached.
	if r := b.do(cmdRead, 0, 0, 100, nil); r.errno != 0 {
		t.Fatal(r.errno)
	}
	if r := a.do(cmdWrite, 0, 0, 4, []byte("AAAA")); r.errno != 0 {
		t.Fatal(r.errno)
	}
	if r := b.do(cmdWrite, 0, 100, 4, []byte("BBBB")); r.errno != 0 {
		t.Fatal(r.errno)
	}
	for _, c := range []*client{a, b} {
		r := c.do(cmdRead, 0, 0, 104, nil)
		if string(r.data[:4]) != "AAAA" || string(r.data[100:]) != "BBBB" {
			t.Fatalf("read %q...%q", r.data[:4], r.data[100:])
		}
	}
	a.disconnect()
	b.disconnect()
	deadline := time.Now().Add(5 * time.Second)
	for s.vols.open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d volumes still open after every connection left", s.vols.open())
		}
		time.Sleep(time.Millisecond)
	}
}

// A snapshot taken while a connection has the working VDI open: its next
// write is refused by the object layer, the export follows the name to the
// new working VDI (as QEMU does), and the snapshot keeps the old data.
func TestExportFollowsSnapshot(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	a, b := dial(t, addr), dial(t, addr)
	a.goExport("Alice", false)
	b.goExport("Alice", false)
	if r := a.do(cmdWrite, 0, 0, 3, []byte("old")); r.errno != 0 {
		t.Fatal(r.errno)
	}
	cl.snapshot(0x10, 0x11, "")
	if r := a.do(cmdWrite, 0, 0, 3, []byte("new")); r.errno != 0 {
		t.Fatalf("write after snapshot: errno %d", r.errno)
	}
	// b never wrote; it still moves to the new VDI and sees a's write.
	if r := b.do(cmdRead, 0, 0, 3, nil); string(r.data) != "new" {
		t.Fatalf("other connection reads %q", r.data)
	}
	s := dial(t, addr)
	s.goExport("Alice:1", false)
	if r := s.do(cmdRead, 0, 0, 3, nil); string(r.data) != "old" {
		t.Fatalf("snapshot reads %q", r.data)
	}
	if ino := cl.inode(0x11); ino.DataVdiID[0] != 0x11 {
		t.Fatalf("new working VDI's object 0 owned by %x", ino.DataVdiID[0])
	}
}

// Shutdown answers what was already read before closing.
func TestShutdownFinishesInFlight(t *testing.T) {
	s, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 8<<20)
	c := dial(t, addr)
	c.goExport("Alice", false)
	c.do(cmdWrite, 0, 0, 5, []byte("hello"))
	block := make(chan struct{})
	cl.objs.mu.Lock()
	cl.objs.block = block
	cl.objs.mu.Unlock()
	unblock := sync.OnceFunc(func() { close(block) })
	defer unblock()
	c.send(cmdRead, 0, 1, 0, 5, nil)
	time.Sleep(50 * time.Millisecond) // let the server read the request
	done := make(chan error)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	unblock()
	r := c.recv(func(uint64) int { return 5 })
	if r.errno != 0 || string(r.data) != "hello" {
		t.Fatalf("in-flight read: errno %d %q", r.errno, r.data)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

// A write longer than the advertised maximum cannot be skipped: the
// connection is closed after an error reply.
func TestOversizedWriteClosesConnection(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 64<<20)
	c := dial(t, addr)
	c.goExport("Alice", false)
	c.send(cmdWrite, 0, 1, 0, maxPayload+1, nil)
	if r := c.recv(nil); r.errno != errInval {
		t.Fatalf("errno %d", r.errno)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection still open: %v", err)
	}
}

// The in-flight bound holds: the reader stops while MaxInFlight requests
// run, and everything completes once they do.
func TestInFlightBound(t *testing.T) {
	cl := &cluster{objs: newMemObjects()}
	cl.create("Alice", 0x10, 8<<20)
	s := New(Config{Objects: cl.objs, Lookup: cl.Lookup, Vids: cl.Vids, MaxInFlight: 4})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Close()
	c := dial(t, l.Addr().String())
	c.goExport("Alice", false)
	c.do(cmdWrite, 0, 0, 1, []byte{1})
	block := make(chan struct{})
	cl.objs.mu.Lock()
	cl.objs.block = block
	cl.objs.mu.Unlock()
	unblock := sync.OnceFunc(func() { close(block) })
	defer unblock()
	for i := 0; i < 20; i++ {
		c.send(cmdRead, 0, uint64(i), 0, 1, nil)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(s.conns0().inflight); n != 4 {
		t.Fatalf("%d requests running, want the bound 4", n)
	}
	unblock()
	for i := 0; i < 20; i++ {
		if r := c.recv(func(uint64) int { return 1 }); r.errno != 0 || r.data[0] != 1 {
			t.Fatalf("read %d: errno %d", r.cookie, r.errno)
		}
	}
}

// conns0 returns the one connection of a test server.
func (s *Server) conns0() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.mu.conns {
		return c
	}
	return nil
}

// The data path does not allocate data buffers per request.
func TestReadPathAllocations(t *testing.T) {
	b := getBuf(1 << 20)
	putBuf(b)
	allocs := testing.AllocsPerRun(100, func() {
		b := getBuf(1 << 20)
		putBuf(b)
	})
	if allocs > 0 && !raceEnabled { // the race detector makes sync.Pool drop items
		t.Fatalf("getBuf/putBuf allocates %.1f times", allocs)
	}
}

// The bytes of data in flight are bounded too: 32 MiB reads stop being
// taken off the socket once maxBytesInFlight is held.
func TestBytesInFlightBound(t *testing.T) {
	s, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 64<<20)
	c := dial(t, addr)
	c.goExport("Alice", false)
	c.do(cmdWrite, 0, 0, 1, []byte{1})
	block := make(chan struct{})
	cl.objs.mu.Lock()
	cl.objs.block = block
	cl.objs.mu.Unlock()
	unblock := sync.OnceFunc(func() { close(block) })
	defer unblock()
	const n = 12
	for i := 0; i < n; i++ {
		c.send(cmdRead, 0, uint64(i), 0, maxPayload, nil)
	}
	// The reader holds a token for the read it cannot start yet. Wait
	// for the reads to be taken (a loaded machine is slow to), then check
	// that no more are taken.
	want := maxBytesInFlight/maxPayload + 1
	var got int
	var free int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if cn := s.conns0(); cn != nil {
			cn.bytes.mu.Lock()
			free = int64(cn.bytes.free)
			cn.bytes.mu.Unlock()
			got = len(cn.inflight)
		}
		if got >= want && free == 0 || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(100 * time.Millisecond)
	if cn := s.conns0(); len(cn.inflight) != want || got != want || free != 0 {
		t.Fatalf("%d (then %d) reads of %d MiB taken, want %d; %d bytes free", got, len(cn.inflight), maxPayload>>20, want, free)
	}
	unblock()
	for i := 0; i < n; i++ {
		if r := c.recv(func(uint64) int { return maxPayload }); r.errno != 0 || r.data[0] != 1 {
			t.Fatalf("read %d: errno %d", r.cookie, r.errno)
		}
	}
}

// A read the volume can answer at once is served by the connection's
// reader (no worker); one it cannot (here: TryReadObject refuses) goes to
// a worker. Both return the same bytes.
func TestReadsServedInline(t *testing.T) {
	_, cl, addr := startServer(t)
	cl.create("Alice", 0x10, 4<<20)
	c := dial(t, addr)
	c.goExport("Alice", true)
	data := pattern(8192, 7)
	if r := c.do(cmdWrite, 0, 4096, uint32(len(data)), data); r.errno != 0 {
		t.Fatalf("write: error %d", r.errno)
	}
	for _, inline := range []bool{true, false} {
		cl.objs.noTry.Store(!inline)
		before := cl.objs.tried.Load()
		r := c.do(cmdRead, 0, 4096, uint32(len(data)), nil)
		if r.errno != 0 || !bytes.Equal(r.data, data) {
			t.Fatalf("inline %v: read error %d, %d bytes, equal %v", inline, r.errno, len(r.data), bytes.Equal(r.data, data))
		}
		// A hole of a working VDI is never served inline (it is checked
		// against the inode first).
		if r := c.do(cmdRead, 0, 2<<20, 4096, nil); r.errno != 0 || !bytes.Equal(r.data, make([]byte, 4096)) {
			t.Fatalf("inline %v: hole read error %d", inline, r.errno)
		}
		if got := cl.objs.tried.Load() - before; inline && got != 1 || !inline && got != 0 {
			t.Fatalf("inline %v: %d reads served by the reader", inline, got)
		}
	}
}

// Requests sent together, as a client at queue depth sends them: the
// reader holds the replies of a run of inline reads back to write them
// together, and never waits with one held. Reads, a write between them,
// a read refused before the volume, a read too big to be served inline
// and a read at the end with no request after it are all answered, each
// with its own bytes; with more reads in a run than maxHeld too.
func TestPipelinedRequestsAllAnswered(t *testing.T) {
	for _, structured := range []bool{false, true} {
		cl, c, _, data := writtenAlice(t, structured, 1<<20, 3)
		type want struct {
			off, n int
			errno  uint32
		}
		wants := map[uint64]want{}
		var b []byte
		add := func(typ uint16, off, n int, payload []byte, errno uint32) {
			cookie := uint64(len(wants) + 1)
			wants[cookie] = want{off, n, errno}
			if typ != cmdRead {
				wants[cookie] = want{-1, 0, errno}
			}
			b = appendRequest(b, typ, 0, cookie, uint64(off), uint32(n), payload)
		}
		for i := range 2*maxHeld + 3 {
			add(cmdRead, i*4096, 4096, nil, 0)
		}
		add(cmdWrite, 6<<20, 4, []byte("abcd"), 0) // nothing here reads it: it may run after them
		add(cmdRead, 8<<20, 4096, nil, errInval)
		add(cmdRead, 4096, 4096, nil, 0)
		add(cmdRead, 0, 512<<10, nil, 0)
		for i := range 5 {
			add(cmdRead, 64<<10+i*8192, 8192, nil, 0)
		}
		before := cl.objs.tried.Load()
		c.write(b)
		for range len(wants) {
			r := c.recv(func(cookie uint64) int { return wants[cookie].n })
			w, ok := wants[r.cookie]
			if !ok {
				t.Fatalf("structured %v: reply to cookie %d, unknown or answered twice", structured, r.cookie)
			}
			delete(wants, r.cookie)
			if r.errno != w.errno {
				t.Fatalf("structured %v: cookie %d: errno %d, want %d", structured, r.cookie, r.errno, w.errno)
			}
			if w.off >= 0 && w.errno == 0 && !bytes.Equal(r.data, data[w.off:w.off+w.n]) {
				t.Fatalf("structured %v: cookie %d: wrong bytes", structured, r.cookie)
			}
		}
		if got := cl.objs.tried.Load() - before; got < 2*maxHeld {
			t.Fatalf("structured %v: %d reads served inline, want at least %d", structured, got, 2*maxHeld)
		}
	}
}
