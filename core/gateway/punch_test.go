package gateway

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// PunchObject zeroes the range on the local copy and sends PUNCH_PEER
// (offset in the header, the length as an 8-byte payload) to the other;
// write-back punches carry CACHE and are left for Flush. A peer that
// does not know PUNCH_PEER gets the zeros as a WRITE_PEER instead.
func TestPunchObject(t *testing.T) {
	g, st, peer := twoNodeGateway(t)
	ctx := context.Background()
	oid := proto.VidToDataOid(testVid, 0)
	const size = 4 << 20
	data := bytes.Repeat([]byte{0x5a}, size)
	if err := g.CreateAndWrite(ctx, oid, 0, 0, data, 0); err != nil {
		t.Fatal(err)
	}
	peer.take()
	local := func() []byte {
		t.Helper()
		b := make([]byte, size)
		if err := st.ReadAt(ctx, oid, b, 0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	punched := func(off, n int) {
		t.Helper()
		clear(data[off : off+n])
		if !bytes.Equal(local(), data) {
			t.Fatalf("local copy after punching [%d,+%d) differs", off, n)
		}
	}

	if err := g.PunchObject(ctx, oid, 4096, 8192, 0); err != nil {
		t.Fatal(err)
	}
	reqs := peer.take()
	if len(reqs) != 1 || reqs[0].Opcode != proto.OpPunchPeer || reqs[0].Obj().Oid != oid || reqs[0].Obj().Offset != 4096 ||
		reqs[0].DataLength != 8 || reqs[0].Flags&proto.FlagCmdWrite == 0 || reqs[0].Flags&proto.FlagCmdCache != 0 {
		t.Fatalf("peer got %+v, want one synced PUNCH_PEER at 4096 with an 8-byte payload", reqs)
	}
	punched(4096, 8192)
	if s := st.Stats(); s.Dirty != 0 {
		t.Fatalf("a synced punch left %d objects unsynced", s.Dirty)
	}

	// Write-back: unsynced on both copies until Flush.
	if err := g.PunchObject(ctx, oid, 1<<20, 1<<20, proto.FlagCmdCache); err != nil {
		t.Fatal(err)
	}
	if op, cache := ops(peer.take()); len(op) != 1 || op[0] != proto.OpPunchPeer || !cache[0] {
		t.Fatalf("write-back punch sent %v (CACHE %v), want PUNCH_PEER with CACHE", op, cache)
	}
	punched(1<<20, 1<<20)
	if s := st.Stats(); s.Dirty != 1 {
		t.Fatalf("write-back punch: %d objects unsynced, want 1", s.Dirty)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if op, _ := ops(peer.take()); len(op) != 1 || op[0] != proto.OpFlushPeer {
		t.Fatalf("Flush after a write-back punch sent %v, want FLUSH_PEER", op)
	}

	// An older peer answers INVALID_PARMS to the unknown opcode.
	peer.answer(func(r proto.Request) proto.Result {
		if r.Opcode == proto.OpPunchPeer {
			return proto.ResInvalidParms
		}
		return proto.ResSuccess
	})
	if err := g.PunchObject(ctx, oid, 3<<20, 65536, 0); err != nil {
		t.Fatal(err)
	}
	reqs = peer.take()
	if op, _ := ops(reqs); len(op) != 2 || op[0] != proto.OpPunchPeer || op[1] != proto.OpWritePeer ||
		reqs[1].Obj().Offset != 3<<20 || reqs[1].DataLength != 65536 {
		t.Fatalf("old peer got %+v, want PUNCH_PEER then a WRITE_PEER of 65536 bytes at 3 MiB", reqs)
	}
	punched(3<<20, 65536)

	// A range past the object's end goes nowhere.
	peer.answer(nil)
	for _, r := range [][2]int64{{size - 10, 20}, {-1, 10}, {0, -1}} {
		if err := g.PunchObject(ctx, oid, r[0], r[1], 0); !errors.Is(err, proto.ResInvalidParms) {
			t.Errorf("punch [%d,+%d): %v, want INVALID_PARMS", r[0], r[1], err)
		}
	}
	if reqs := peer.take(); len(reqs) != 0 {
		t.Fatalf("out-of-range punches sent %+v", reqs)
	}
	if !bytes.Equal(local(), data) {
		t.Fatal("out-of-range punches changed the local copy")
	}
}
