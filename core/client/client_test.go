package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// peer is the server end of one client connection, driven by the test.
type peer struct {
	t *testing.T
	c net.Conn
}

// listen starts a listener whose connections the test drives by hand.
func listen(t *testing.T, network, addr string) (net.Listener, <-chan *peer) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *peer, 4)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			ch <- &peer{t: t, c: c}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l, ch
}

// dial connects a client to a fresh hand-driven server.
func dial(t *testing.T) (*Client, *peer) {
	t.Helper()
	l, peers := listen(t, "tcp", "127.0.0.1:0")
	c, err := Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case p := <-peers:
		return c, p
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	return nil, nil
}

// read reads one request and its payload (sent only with WRITE).
func (p *peer) read() (proto.Request, []byte, error) {
	var hb [proto.HeaderSize]byte
	if _, err := io.ReadFull(p.c, hb[:]); err != nil {
		return proto.Request{}, nil, err
	}
	var req proto.Request
	req.Unmarshal(hb[:])
	var data []byte
	if req.Flags&proto.FlagCmdWrite != 0 {
		data = make([]byte, req.DataLength)
		if _, err := io.ReadFull(p.c, data); err != nil {
			return req, nil, err
		}
	}
	return req, data, nil
}

// reply answers req with result and data (data_length = len(data)).
func (p *peer) reply(req proto.Request, result proto.Result, data []byte) error {
	rsp := proto.Response{Opcode: req.Opcode, ID: req.ID, Result: result, DataLength: uint32(len(data)), Epoch: 1}
	var hb [proto.HeaderSize]byte
	rsp.Marshal(hb[:])
	_, err := p.c.Write(append(hb[:], data...))
	return err
}

func (p *peer) mustRead() (proto.Request, []byte) {
	req, data, err := p.read()
	if err != nil {
		p.t.Errorf("server read: %v", err)
	}
	return req, data
}

func TestRequestFraming(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flags     uint16
		wdata     []byte
		rbufLen   int
		replyData []byte
		wantFlags uint16
		wantLen   uint32
		wantN     int
	}{
		{"read", 0, nil, 100, bytes.Repeat([]byte{7}, 100), 0, 100, 100},
		{"write", 0, []byte("0123456789"), 0, nil, proto.FlagCmdWrite, 10, 0},
		{"empty write", 0, []byte{}, 0, nil, proto.FlagCmdWrite, 0, 0},
		// The payload is always data_length bytes: padded up to the reply
		// buffer when that is larger.
		{"piggyback", proto.FlagCmdPiggyback, []byte("12345678"), 64, []byte("abcdefghijklmnop"), proto.FlagCmdWrite | proto.FlagCmdPiggyback, 64, 16},
		{"piggyback, small reply buffer", proto.FlagCmdPiggyback, []byte("12345678"), 4, []byte("abcd"), proto.FlagCmdWrite | proto.FlagCmdPiggyback, 8, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := dial(t)
			type seen struct {
				req  proto.Request
				data []byte
			}
			got := make(chan seen, 1)
			go func() {
				req, data := p.mustRead()
				got <- seen{req, data}
				p.reply(req, proto.ResSuccess, tc.replyData)
			}()
			req := proto.NewRequest(proto.OpReadObj)
			req.Flags = tc.flags
			req.SetObj(proto.ObjArgs{Oid: 0x7c2b2500000003, Offset: 4096})
			rbuf := make([]byte, tc.rbufLen)
			rsp, n, err := c.Do(context.Background(), &req, tc.wdata, rbuf)
			if err != nil {
				t.Fatal(err)
			}
			s := <-got
			if s.req.Flags != tc.wantFlags || s.req.DataLength != tc.wantLen || s.req.ProtoVer != proto.ProtoVer || s.req.Opcode != proto.OpReadObj {
				t.Errorf("server saw flags %#x data_length %d proto_ver %d op %#x, want %#x %d", s.req.Flags, s.req.DataLength, s.req.ProtoVer, s.req.Opcode, tc.wantFlags, tc.wantLen)
			}
			if o := s.req.Obj(); o.Oid != 0x7c2b2500000003 || o.Offset != 4096 {
				t.Errorf("server saw obj args %+v", o)
			}
			wantData := tc.wdata
			if tc.wdata != nil && int(tc.wantLen) > len(tc.wdata) {
				wantData = append(bytes.Clone(tc.wdata), make([]byte, int(tc.wantLen)-len(tc.wdata))...)
			}
			if !bytes.Equal(s.data, wantData) {
				t.Errorf("server saw payload %q, want %q", s.data, wantData)
			}
			if n != tc.wantN || !bytes.Equal(rbuf[:n], tc.replyData[:n]) || rsp.ID != s.req.ID || rsp.Epoch != 1 {
				t.Errorf("reply: n %d id %d epoch %d, want n %d id %d", n, rsp.ID, rsp.Epoch, tc.wantN, s.req.ID)
			}
		})
	}
}

// TestRepliesMatchedByID: replies come back in any order; each caller gets
// its own.
func TestRepliesMatchedByID(t *testing.T) {
	c, p := dial(t)
	const n = 64
	go func() {
		// Collect every request, then answer them newest first.
		var reqs []proto.Request
		for len(reqs) < n {
			req, _ := p.mustRead()
			reqs = append(reqs, req)
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			r := reqs[i]
			p.reply(r, proto.ResSuccess, binary.LittleEndian.AppendUint64(nil, r.Obj().Oid))
		}
	}()
	var wg sync.WaitGroup
	ids := make(chan uint32, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := proto.NewRequest(proto.OpReadObj)
			req.SetObj(proto.ObjArgs{Oid: uint64(1000 + i)})
			buf := make([]byte, 8)
			rsp, k, err := c.Do(context.Background(), &req, nil, buf)
			if err != nil || k != 8 {
				t.Errorf("call %d: %d %v", i, k, err)
				return
			}
			if got := binary.LittleEndian.Uint64(buf); got != uint64(1000+i) {
				t.Errorf("call %d got the reply for oid %d", i, got)
			}
			if rsp.ID != req.ID {
				t.Errorf("call %d: reply id %d, request id %d", i, rsp.ID, req.ID)
			}
			ids <- req.ID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[uint32]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %d used twice", id)
		}
		seen[id] = true
	}
}

// TestReplyStreamStaysInSync: reply data longer than the caller's buffer
// and replies for ids nobody waits for are skipped, not misread as the
// next header.
func TestReplyStreamStaysInSync(t *testing.T) {
	c, p := dial(t)
	go func() {
		req, _ := p.mustRead()
		p.reply(req, proto.ResSuccess, bytes.Repeat([]byte{0xAA}, 10000)) // asked for 10
		req, _ = p.mustRead()
		stray := req
		stray.ID += 1000
		p.reply(stray, proto.ResSuccess, bytes.Repeat([]byte{0xBB}, 5000))
		p.reply(req, proto.ResSuccess, []byte("ok"))
		req, _ = p.mustRead()
		p.reply(req, proto.ResNoObj, nil)
	}()
	ctx := context.Background()
	buf := make([]byte, 10)
	req := proto.NewRequest(proto.OpReadObj)
	if _, n, err := c.Do(ctx, &req, nil, buf); err != nil || n != 10 || !bytes.Equal(buf, bytes.Repeat([]byte{0xAA}, 10)) {
		t.Fatalf("long reply: %d %v %x", n, err, buf)
	}
	buf = make([]byte, 10)
	if _, n, err := c.Do(ctx, &req, nil, buf); err != nil || n != 2 || string(buf[:n]) != "ok" {
		t.Fatalf("reply after a stray one: %d %v %q", n, err, buf[:n])
	}
	rsp, _, err := c.Call(ctx, &req, nil, nil)
	if !errors.Is(err, proto.ResNoObj) || rsp.Result != proto.ResNoObj {
		t.Fatalf("Call with NO_OBJ: %v (result %v)", err, rsp.Result)
	}
}

func TestDoReturnsResultCall(t *testing.T) {
	c, p := dial(t)
	go func() {
		for {
			req, _, err := p.read()
			if err != nil {
				return
			}
			p.reply(req, proto.ResVdiExist, nil)
		}
	}()
	req := proto.NewRequest(proto.OpNewVdi)
	rsp, _, err := c.Do(context.Background(), &req, make([]byte, 256), nil)
	if err != nil || rsp.Result != proto.ResVdiExist {
		t.Errorf("Do: %v result %v; a result is not an error for Do", err, rsp.Result)
	}
	if _, _, err := c.Call(context.Background(), &req, make([]byte, 256), nil); !errors.Is(err, proto.ResVdiExist) {
		t.Errorf("Call: %v, want %v", err, proto.ResVdiExist)
	}
}

// TestBrokenConnection: calls in flight when the server goes away fail
// with ErrClosed, and so do later calls, without hanging.
func TestBrokenConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(p *peer)
	}{
		{"closed before replying", func(p *peer) { p.mustRead(); p.c.Close() }},
		{"closed in the middle of a reply header", func(p *peer) {
			p.mustRead()
			p.c.Write(make([]byte, 20))
			p.c.Close()
		}},
		{"closed in the middle of reply data", func(p *peer) {
			req, _ := p.mustRead()
			rsp := proto.Response{Opcode: req.Opcode, ID: req.ID, DataLength: 100}
			var hb [proto.HeaderSize]byte
			rsp.Marshal(hb[:])
			p.c.Write(append(hb[:], make([]byte, 10)...))
			p.c.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := dial(t)
			go tc.serve(p)
			req := proto.NewRequest(proto.OpReadObj)
			_, _, err := c.Do(context.Background(), &req, nil, make([]byte, 100))
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call in flight: %v, want ErrClosed", err)
			}
			_, _, err = c.Do(context.Background(), &req, nil, make([]byte, 100))
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call after the break: %v, want ErrClosed", err)
			}
		})
	}
}

func TestCancelAndClose(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		c, p := dial(t)
		read := make(chan struct{})
		go func() { p.mustRead(); p.mustRead(); close(read) }() // and never answer
		// A patient call shares the connection with an impatient one.
		patient := make(chan error, 1)
		go func() {
			req := proto.NewRequest(proto.OpReadObj)
			_, _, err := c.Do(context.Background(), &req, nil, make([]byte, 8))
			patient <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req := proto.NewRequest(proto.OpReadObj)
		_, _, err := c.Do(ctx, &req, nil, make([]byte, 8))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("cancelled call: %v", err)
		}
		<-read
		// The reply could still arrive into the old buffer, so the
		// connection is dropped; the other calls learn that it closed,
		// not that someone else's deadline passed.
		select {
		case err := <-patient:
			if !errors.Is(err, ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("call sharing the connection: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a call sharing the connection hangs")
		}
		if _, _, err := c.Do(context.Background(), &req, nil, nil); !errors.Is(err, ErrClosed) {
			t.Errorf("call after a cancelled one: %v, want ErrClosed", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		c, p := dial(t)
		read := make(chan struct{})
		go func() { p.mustRead(); close(read) }()
		errc := make(chan error, 1)
		go func() {
			req := proto.NewRequest(proto.OpReadObj)
			_, _, err := c.Do(context.Background(), &req, nil, make([]byte, 8))
			errc <- err
		}()
		<-read
		c.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call pending at Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not release a pending call")
		}
		c.Close() // a second Close is harmless
	})
}

func TestDialUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	_, peers := listen(t, "unix", path)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Addr() != path {
		t.Errorf("Addr() = %q", c.Addr())
	}
	p := <-peers
	go func() {
		req, _ := p.mustRead()
		p.reply(req, proto.ResSuccess, nil)
	}()
	req := proto.NewRequest(proto.OpGetNodeList)
	if _, _, err := c.Call(context.Background(), &req, nil, nil); err != nil {
		t.Fatal(err)
	}
	if req.ProtoVer != proto.SheepProtoVer {
		t.Errorf("internal op sent with proto_ver %#x", req.ProtoVer)
	}
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}

// TestObjects: the object interface maps each call to one gateway request.
func TestObjects(t *testing.T) {
	c, p := dial(t)
	type seen struct {
		req  proto.Request
		data []byte
	}
	reqs := make(chan seen, 1)
	results := make(chan proto.Result, 1)
	replies := make(chan []byte, 1)
	go func() {
		for {
			req, data, err := p.read()
			if err != nil {
				return
			}
			reqs <- seen{req, data}
			p.reply(req, <-results, <-replies)
		}
	}()
	o := Objects{C: c, Flags: proto.FlagCmdDirect}
	ctx := context.Background()
	const oid, cow = uint64(0x7c2b2600000001), uint64(0x7c2b2500000001)
	for _, tc := range []struct {
		name      string
		call      func() error
		result    proto.Result
		reply     []byte
		wantOp    proto.Opcode
		wantFlags uint16
		wantLen   uint32
		wantCow   uint64
		wantData  []byte
		wantErr   proto.Result
	}{
		{"read", func() error { return o.ReadObject(ctx, oid, 512, make([]byte, 4)) }, 0, []byte("abcd"),
			proto.OpReadObj, proto.FlagCmdDirect, 4, 0, nil, 0},
		{"short read", func() error { return o.ReadObject(ctx, oid, 512, make([]byte, 4)) }, 0, []byte("ab"),
			proto.OpReadObj, proto.FlagCmdDirect, 4, 0, nil, proto.ResEIO},
		{"read of a missing object", func() error { return o.ReadObject(ctx, oid, 0, make([]byte, 4)) }, proto.ResNoObj, nil,
			proto.OpReadObj, proto.FlagCmdDirect, 4, 0, nil, proto.ResNoObj},
		{"write", func() error { return o.WriteObject(ctx, oid, 512, []byte("xyz"), 0) }, 0, nil,
			proto.OpWriteObj, proto.FlagCmdDirect | proto.FlagCmdWrite, 3, 0, []byte("xyz"), 0},
		{"empty write", func() error { return o.WriteObject(ctx, oid, 0, nil, 0) }, 0, nil,
			proto.OpWriteObj, proto.FlagCmdDirect | proto.FlagCmdWrite, 0, 0, []byte{}, 0},
		{"readonly write", func() error { return o.WriteObject(ctx, oid, 0, []byte("x"), 0) }, proto.ResReadonly, nil,
			proto.OpWriteObj, proto.FlagCmdDirect | proto.FlagCmdWrite, 1, 0, []byte("x"), proto.ResReadonly},
		{"create", func() error { return o.CreateAndWrite(ctx, oid, 0, 8, []byte("new"), 0) }, 0, nil,
			proto.OpCreateAndWriteObj, proto.FlagCmdDirect | proto.FlagCmdWrite, 3, 0, []byte("new"), 0},
		{"copy on write", func() error { return o.CreateAndWrite(ctx, oid, cow, 8, []byte("cow"), 0) }, 0, nil,
			proto.OpCreateAndWriteObj, proto.FlagCmdDirect | proto.FlagCmdWrite | proto.FlagCmdCow, 3, cow, []byte("cow"), 0},
		{"remove", func() error { return o.RemoveObject(ctx, oid) }, 0, nil,
			proto.OpRemoveObj, proto.FlagCmdDirect, 0, 0, nil, 0},
	} {
		results <- tc.result
		replies <- tc.reply
		err := tc.call()
		s := <-reqs
		if tc.wantErr == 0 && err != nil || tc.wantErr != 0 && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
		a := s.req.Obj()
		if s.req.Opcode != tc.wantOp || s.req.Flags != tc.wantFlags || s.req.DataLength != tc.wantLen || a.Oid != oid || a.CowOid != tc.wantCow {
			t.Errorf("%s: sent op %#x flags %#x len %d oid %x cow %x", tc.name, s.req.Opcode, s.req.Flags, s.req.DataLength, a.Oid, a.CowOid)
		}
		if !bytes.Equal(s.data, tc.wantData) || (tc.wantData != nil) != (s.data != nil) {
			t.Errorf("%s: sent payload %q, want %q", tc.name, s.data, tc.wantData)
		}
	}
	if err := o.Flush(ctx); err != nil {
		t.Errorf("Flush: %v", err)
	}
}
