package server_test

import (
	"context"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// The request path allocates nothing per request: a replica's 4 KiB peer
// writes (server loop, handler, store) and a client's object writes
// through the gateway (placement included). The bound leaves room for
// the client side of this test and a rare pool refill.
func TestWritePathAllocations(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocations are counted without instrumentation")
	}
	_, c, vid := formatted(t)
	data := make([]byte, 4096)
	oid := proto.VidToDataOid(vid, 3)
	create := objReq(proto.OpCreateAndWriteObj, oid, 0)
	if rsp, _ := do(t, c, create, data, nil); rsp.Result != proto.ResSuccess {
		t.Fatalf("create: %v", rsp.Result)
	}
	for _, tc := range []struct {
		name string
		req  proto.Request
	}{
		{"WRITE_PEER", func() proto.Request { r := objReq(proto.OpWritePeer, oid, 8192); r.Epoch = 1; return r }()},
		{"WRITE_OBJ", objReq(proto.OpWriteObj, oid, 8192)},
	} {
		req := tc.req
		n := testing.AllocsPerRun(200, func() {
			rsp, _, err := c.Do(context.Background(), &req, data, nil)
			if err != nil || rsp.Result != proto.ResSuccess {
				t.Fatalf("%s: %v %v", tc.name, rsp.Result, err)
			}
		})
		t.Logf("%s: %.1f allocations a request (client included)", tc.name, n)
		if n > 3 {
			t.Errorf("%s: %.1f allocations a request, want at most 3 (client included)", tc.name, n)
		}
	}
}
