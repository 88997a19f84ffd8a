package gateway

import (
	"context"
	"encoding/binary"
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
