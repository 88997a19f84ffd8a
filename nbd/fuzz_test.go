package nbd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// fuzzConn is a client connection whose bytes are fixed in advance; what
// the server writes is dropped.
type fuzzConn struct{ r *bytes.Reader }

func (c fuzzConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c fuzzConn) Close() error                       { return nil }
func (c fuzzConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c fuzzConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c fuzzConn) SetDeadline(t time.Time) error      { return nil }
func (c fuzzConn) SetReadDeadline(t time.Time) error  { return nil }
func (c fuzzConn) SetWriteDeadline(t time.Time) error { return nil }

// optionBytes encodes one client option (magic, option, length, data).
func optionBytes(opt uint32, data []byte) []byte {
	b := make([]byte, optionHeaderLen, optionHeaderLen+len(data))
	be.PutUint64(b[0:], magicOption)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], uint32(len(data)))
	return append(b, data...)
}

// FuzzNegotiation feeds arbitrary client bytes to the option haggling of
// a server with one VDI, "Alice": it must end (the bytes run out), with
// either an export or an error, and never panic.
func FuzzNegotiation(f *testing.F) {
	flags := be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes)
	seq := func(opts ...[]byte) []byte { return bytes.Join(append([][]byte{flags}, opts...), nil) }
	f.Add(seq(optionBytes(optGo, infoData("Alice", infoName, infoDescription))))
	f.Add(seq(optionBytes(optExportName, []byte("Alice"))))
	f.Add(seq(optionBytes(optList, nil), optionBytes(optAbort, nil)))
	f.Add(seq(optionBytes(optStructuredReply, nil),
		optionBytes(optListMetaContext, metaData("Alice")),
		optionBytes(optSetMetaContext, metaData("Alice", "base:allocation")),
		optionBytes(optInfo, infoData("Alice:1")),
		optionBytes(optGo, infoData("Alice"))))
	f.Add(seq(optionBytes(optGo, infoData("nosuch")), optionBytes(99, []byte("x")), optionBytes(optInfo, []byte{0, 0, 0, 9})))
	f.Add(seq(optionBytes(optSetMetaContext, metaData("Alice", "base:")), optionBytes(optExportName, []byte(""))))
	f.Add(seq(optionBytes(optList, []byte("junk"))))
	f.Add(append(flags, optionBytes(optGo, nil)[:10]...))
	f.Add([]byte{0, 0, 0, 4})

	cl := &cluster{objs: newMemObjects()}
	cl.create("Alice", 0x7c2b25, 16<<20)
	// A lookup by name alone: cluster.Lookup reads every inode, too slow
	// for a fuzzer's rate.
	lookup := func(_ context.Context, name, tag string, snapid uint32) (uint32, error) {
		if name == "Alice" && tag == "" && snapid == 0 {
			return 0x7c2b25, nil
		}
		return 0, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
	}
	s := New(Config{Objects: cl.objs, Lookup: lookup, Vids: cl.Vids})
	defer s.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &conn{srv: s, nc: fuzzConn{bytes.NewReader(in)}, br: bufio.NewReader(bytes.NewReader(in)), peer: "fuzz"}
		e, err := c.handshake()
		switch {
		case e != nil && err != nil:
			t.Fatalf("handshake returned both an export and %v", err)
		case e == nil && err == nil:
			t.Fatal("handshake returned neither an export nor an error")
		case e != nil:
			s.closeExport(e)
		}
	})
}

// FuzzInfoRequest: whatever NBD_OPT_INFO / NBD_OPT_GO data parseInfoRequest
// accepts, it accepts exactly: its result encodes back to the input.
func FuzzInfoRequest(f *testing.F) {
	f.Add(infoData("Alice", infoName, infoDescription))
	f.Add(infoData(""))
	f.Add([]byte{0, 0, 0, 9, 'x'})
	f.Fuzz(func(t *testing.T, in []byte) {
		name, infos, err := parseInfoRequest(in)
		if err != nil {
			return
		}
		if back := infoData(name, infos...); !bytes.Equal(back, in) {
			t.Fatalf("parsed %q %v from % x, which encode as % x", name, infos, in, back)
		}
	})
}

// FuzzMetaRequest: the same for NBD_OPT_{LIST,SET}_META_CONTEXT data.
func FuzzMetaRequest(f *testing.F) {
	f.Add(metaData("Alice", "base:allocation"))
	f.Add(metaData("Alice"))
	f.Add(metaData("", "base:", ""))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		name, queries, err := parseMetaRequest(in)
		if err != nil {
			return
		}
		if back := metaData(name, queries...); !bytes.Equal(back, in) {
			t.Fatalf("parsed %q %q from % x, which encode as % x", name, queries, in, back)
		}
		if got := matchContexts(queries, true); len(got) > 0 && !reflect.DeepEqual(got, []string{baseAllocation}) {
			t.Fatalf("contexts %q", got)
		}
	})
}
