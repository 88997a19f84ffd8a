package gateway

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestDecrefLocal: drops applied through the gateway to the one copy of a
// ledger on a real store: the first creates it (sparse, the object's full
// size), the ones after change it in place, and the drop that zeroes it
// removes it.
func TestDecrefLocal(t *testing.T) {
	g := oneNodeGateway(t)
	ctx := context.Background()
	ledger := proto.LedgerOid(proto.VidToDataOid(testVid, 3))
	counters := func() []int32 {
		t.Helper()
		b := make([]byte, 12)
		if err := g.store.ReadAt(ctx, ledger, b, 0); err != nil {
			t.Fatal(err)
		}
		return []int32{int32(binary.LittleEndian.Uint32(b)), int32(binary.LittleEndian.Uint32(b[4:])), int32(binary.LittleEndian.Uint32(b[8:]))}
	}
	for i, step := range []struct {
		gen, count uint32
		want       []int32 // nil: the ledger is gone
	}{
		{1, 0, []int32{1, -1, 0}}, // a copy goes (copy-on-write away)
		{1, 0, []int32{1, -2, 0}}, // another
		{0, 2, nil},               // the original, copied twice
	} {
		zero, err := g.Decref(ctx, ledger, step.gen, step.count)
		if err != nil {
			t.Fatal(err)
		}
		if zero != (step.want == nil) {
			t.Fatalf("step %d: zero %v", i, zero)
		}
		if step.want == nil {
			if g.store.Exists(ledger) {
				t.Fatalf("step %d: the zero ledger is still there", i)
			}
			continue
		}
		if got := counters(); got[0] != step.want[0] || got[1] != step.want[1] || got[2] != step.want[2] {
			t.Fatalf("step %d: counters %v, want %v", i, got, step.want)
		}
	}
	if _, err := g.Decref(ctx, proto.VidToDataOid(testVid, 3), 1, 0); err == nil {
		t.Error("a drop sent to a data object, not a ledger, was applied")
	}
}

// TestDecrefAtMostOncePerNode: a copy that refuses a drop (an epoch
// mismatch) is asked again; the copy that took it is not. A copy whose
// answer was lost (the connection closed) is not asked again either: it
// may have counted the drop.
func TestDecrefAtMostOncePerNode(t *testing.T) {
	ctx := context.Background()
	ledger := proto.LedgerOid(proto.VidToDataOid(testVid, 1))
	local := func(g *Gateway) int32 {
		t.Helper()
		b := make([]byte, 8)
		if err := g.store.ReadAt(ctx, ledger, b, 0); err != nil {
			t.Fatal(err)
		}
		return int32(binary.LittleEndian.Uint32(b[4:]))
	}

	g, _, peer := twoNodeGateway(t)
	refusals := 2
	peer.answer(func(r proto.Request) proto.Result {
		if refusals > 0 {
			refusals--
			return proto.ResNewNodeVer
		}
		return proto.ResSuccess
	})
	if _, err := g.Decref(ctx, ledger, 1, 0); err != nil {
		t.Fatal(err)
	}
	reqs := peer.take()
	if len(reqs) != 3 || reqs[2].Opcode != proto.OpDecrefPeer || reqs[2].Ref() != (proto.RefArgs{Oid: ledger, Generation: 1}) {
		t.Fatalf("peer got %d requests (%v), want 2 refused and 1 DECREF_PEER taken", len(reqs), reqs)
	}
	if got := local(g); got != -1 {
		t.Fatalf("local copy's ledger[1] = %d after 3 rounds, want -1 (counted once)", got)
	}

	// A peer that reads the request and hangs up.
	var mu sync.Mutex
	got := 0
	addr := listenPeer(t, func(c net.Conn) {
		var hb [proto.HeaderSize]byte
		if _, err := io.ReadFull(c, hb[:]); err == nil {
			mu.Lock()
			got++
			mu.Unlock()
		}
		c.Close()
	})
	g2 := localGateway(t, 2, node(addr, 1))
	if _, err := g2.Decref(ctx, ledger, 1, 0); err == nil {
		t.Fatal("a drop whose answer was lost reported success")
	}
	mu.Lock()
	defer mu.Unlock()
	if got != 1 {
		t.Fatalf("the peer that hung up was asked %d times, want once", got)
	}
	if n := local(g2); n != -1 {
		t.Fatalf("local copy's ledger[1] = %d, want -1", n)
	}
}
