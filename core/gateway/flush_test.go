package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// fakeCluster is a cluster.Driver over a fixed state.
type fakeCluster struct {
	mu sync.Mutex
	st *cluster.State
}

func (f *fakeCluster) Propose(context.Context, *cluster.Entry) (proto.Result, error) {
	return proto.ResSuccess, nil
}
func (f *fakeCluster) View(fn func(*cluster.State)) { f.mu.Lock(); defer f.mu.Unlock(); fn(f.st) }
func (f *fakeCluster) ReadState() *cluster.State    { f.mu.Lock(); return f.st }
func (f *fakeCluster) ReleaseState()                { f.mu.Unlock() }
func (f *fakeCluster) Sync(context.Context) error   { return nil }

// fakePeer is a peer sheep that records the requests it gets and answers
// them with result(req).
type fakePeer struct {
	node proto.Node
	mu   sync.Mutex
	reqs []proto.Request
	// result answers a request (SUCCESS when nil).
	result func(r proto.Request) proto.Result
}

func startPeer(t *testing.T) *fakePeer {
	t.Helper()
	p := &fakePeer{}
	p.node = node(listenPeer(t, func(c net.Conn) { p.serve(c) }), 1)
	return p
}

// listenPeer accepts connections on a loopback port until the test ends,
// each served by serve on its own goroutine, and returns the address.
func listenPeer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go serve(c)
		}
	}()
	return l.Addr().String()
}

func (p *fakePeer) serve(c net.Conn) {
	var hb [proto.HeaderSize]byte
	for {
		if _, err := io.ReadFull(c, hb[:]); err != nil {
			return
		}
		var req proto.Request
		req.Unmarshal(hb[:])
		if req.Flags&proto.FlagCmdWrite != 0 && req.DataLength > 0 {
			if _, err := io.CopyN(io.Discard, c, int64(req.DataLength)); err != nil {
				return
			}
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		res := proto.ResSuccess
		if p.result != nil {
			res = p.result(req)
		}
		p.mu.Unlock()
		rsp := proto.Response{Opcode: req.Opcode, ID: req.ID, Epoch: req.Epoch, Result: res}
		rsp.Marshal(hb[:])
		if _, err := c.Write(hb[:]); err != nil {
			return
		}
	}
}

// take returns the requests received since the last call.
func (p *fakePeer) take() []proto.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.reqs
	p.reqs = nil
	return r
}

func (p *fakePeer) answer(f func(r proto.Request) proto.Result) {
	p.mu.Lock()
	p.result = f
	p.mu.Unlock()
}

func node(addr string, zone uint32) proto.Node {
	return proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort(addr)), NrVnodes: proto.DefaultVnodes, Zone: zone}
}

const testVid = 0x10

// twoNodeGateway is a gateway on a local store in a two-node, two-copy
// cluster whose other node is a fake peer.
func twoNodeGateway(t *testing.T) (*Gateway, *store.Store, *fakePeer) {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	peer := startPeer(t)
	self := node("127.0.0.1:1", 0) // never dialled: the gateway serves itself locally
	cs := &cluster.State{}
	if res := cs.Apply(&cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 2, BlockSizeShift: 22, Nodes: []proto.Node{self, peer.node}}); res != proto.ResSuccess {
		t.Fatal(res)
	}
	if res := cs.Apply(&cluster.Entry{Kind: cluster.KindAddVdi, Vid: testVid, Copies: 2}); res != proto.ResSuccess {
		t.Fatal(res)
	}
	peers := NewPeers()
	t.Cleanup(peers.Close)
	g := New(self.NodeID, st, &fakeCluster{st: cs}, peers, &store.Locks{}, slog.New(slog.DiscardHandler))
	return g, st, peer
}

// ops lists the opcodes of reqs, and whether each carried CACHE.
func ops(reqs []proto.Request) (op []proto.Opcode, cache []bool) {
	for _, r := range reqs {
		op = append(op, r.Opcode)
		cache = append(cache, r.Flags&proto.FlagCmdCache != 0)
	}
	return op, cache
}

// Write-back writes stay unsynced on every copy (the peer's carry CACHE)
// until Flush, which syncs the local copy and sends FLUSH_PEER to the
// other node; synced writes and idle flushes send nothing more.
func TestWriteBackThenFlush(t *testing.T) {
	g, st, peer := twoNodeGateway(t)
	ctx := context.Background()
	oid := proto.VidToDataOid(testVid, 0)
	if err := g.CreateAndWrite(ctx, oid, 0, 0, []byte("hello"), proto.FlagCmdCache); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteObject(ctx, oid, 4096, []byte("world"), proto.FlagCmdCache); err != nil {
		t.Fatal(err)
	}
	op, cache := ops(peer.take())
	if len(op) != 2 || op[0] != proto.OpCreateAndWritePeer || op[1] != proto.OpWritePeer || !cache[0] || !cache[1] {
		t.Fatalf("peer got %v (CACHE %v), want CREATE_AND_WRITE_PEER and WRITE_PEER with CACHE", op, cache)
	}
	if s := st.Stats(); s.Syncs != 0 || s.Dirty != 1 {
		t.Fatalf("local copy after write-back writes: %+v, want no sync and 1 dirty object", s)
	}

	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := peer.take()
	if len(reqs) != 1 || reqs[0].Opcode != proto.OpFlushPeer || reqs[0].Epoch != 1 {
		t.Fatalf("peer got %v on Flush, want one FLUSH_PEER of epoch 1", reqs)
	}
	if s := st.Stats(); s.Dirty != 0 || s.FlushedObjects != 1 || s.Syncs == 0 {
		t.Fatalf("local copy after Flush: %+v", s)
	}

	// Nothing written back since: nothing to flush anywhere.
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if reqs := peer.take(); len(reqs) != 0 {
		t.Fatalf("an idle Flush sent %v", reqs)
	}
	// A synced write is synced on both copies before it returns.
	syncs := st.Stats().Syncs
	if err := g.WriteObject(ctx, oid, 0, []byte("sync"), 0); err != nil {
		t.Fatal(err)
	}
	if op, cache := ops(peer.take()); len(op) != 1 || cache[0] {
		t.Fatalf("synced write sent %v (CACHE %v)", op, cache)
	}
	if s := st.Stats(); s.Syncs == syncs || s.Dirty != 0 {
		t.Fatalf("local copy after a synced write: %+v", s)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if reqs := peer.take(); len(reqs) != 0 {
		t.Fatalf("Flush after synced writes only sent %v", reqs)
	}
}

// A node that fails its flush fails Flush with its error; the writes stay
// due, so the next Flush asks again.
func TestFlushFailsWhenAPeerFails(t *testing.T) {
	g, st, peer := twoNodeGateway(t)
	ctx := context.Background()
	oid := proto.VidToDataOid(testVid, 0)
	if err := g.CreateAndWrite(ctx, oid, 0, 0, []byte("hello"), proto.FlagCmdCache); err != nil {
		t.Fatal(err)
	}
	peer.answer(func(r proto.Request) proto.Result {
		if r.Opcode == proto.OpFlushPeer {
			return proto.ResEIO
		}
		return proto.ResSuccess
	})
	err := g.Flush(ctx)
	if !errors.Is(err, proto.ResEIO) {
		t.Fatalf("Flush with a failing peer: %v, want EIO", err)
	}
	if s := st.Stats(); s.Dirty != 0 {
		t.Fatalf("the local copy was not flushed alongside: %+v", s)
	}
	peer.take()
	peer.answer(nil)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if reqs := peer.take(); len(reqs) != 1 || reqs[0].Opcode != proto.OpFlushPeer {
		t.Fatalf("the Flush after a failed one sent %v, want FLUSH_PEER again", reqs)
	}
}

// A flush answered with an epoch mismatch is sent again, not reported.
func TestFlushRetriesEpochMismatch(t *testing.T) {
	g, _, peer := twoNodeGateway(t)
	ctx := context.Background()
	if err := g.CreateAndWrite(ctx, proto.VidToDataOid(testVid, 0), 0, 0, []byte("x"), proto.FlagCmdCache); err != nil {
		t.Fatal(err)
	}
	n := 0
	peer.answer(func(r proto.Request) proto.Result {
		if r.Opcode == proto.OpFlushPeer {
			if n++; n == 1 {
				return proto.ResNewNodeVer
			}
		}
		return proto.ResSuccess
	})
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	peer.mu.Lock()
	defer peer.mu.Unlock()
	if n != 2 {
		t.Fatalf("FLUSH_PEER sent %d times, want 2", n)
	}
}
