package server_test

import (
	"testing"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func stat(t *testing.T, c *client.Client) proto.Stat {
	t.Helper()
	buf := make([]byte, proto.StatSize)
	rsp, out := do(t, c, proto.NewRequest(proto.OpStat), nil, buf)
	expect(t, "STAT", rsp, proto.ResSuccess)
	var st proto.Stat
	if err := st.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStatCountsRequests: the object requests a client sends move STAT's
// gateway counters by exactly what they carried; failed ones count too.
func TestStatCountsRequests(t *testing.T) {
	_, c, vid := formatted(t)
	before := stat(t, c)
	oid := proto.VidToDataOid(vid, 0)
	rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, oid, 0), pattern(1, 4096), nil)
	expect(t, "create", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, objReq(proto.OpWriteObj, oid, 4096), pattern(2, 512), nil)
	expect(t, "write", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, objReq(proto.OpReadObj, oid, 0), nil, make([]byte, 1000))
	expect(t, "read", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, objReq(proto.OpReadObj, proto.VidToDataOid(vid, 9), 0), nil, make([]byte, 24))
	expect(t, "read of a missing object", rsp, proto.ResNoObj)
	rsp, _ = do(t, c, objReq(proto.OpRemoveObj, oid, 0), nil, nil)
	expect(t, "remove", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, objReq(proto.OpFlushVdi, proto.VidToVdiOid(vid), 0), nil, nil)
	expect(t, "flush", rsp, proto.ResInvalidParms)

	after := stat(t, c)
	want := before
	want.GwayTotal += 6
	want.GwayWrite += 2
	want.GwayRead += 2
	want.GwayRemove++
	want.GwayFlush++
	want.GwayRx += 4096 + 512
	want.GwayTx += 1000 + 24
	if after != want {
		t.Fatalf("STAT after the requests:\n%+v\nwant\n%+v", after, want)
	}
	if after.GwayActive != 0 || after.PeerActive != 0 {
		t.Fatalf("requests still counted as active: %+v", after)
	}
}

// TestStatExtension: dog's STAT (data_length = sd_stat) gets sd_stat
// exactly; a longer request gets proto.StatExt after it.
func TestStatExtension(t *testing.T) {
	_, c, _ := formatted(t)
	rsp, out := do(t, c, proto.NewRequest(proto.OpStat), nil, make([]byte, proto.StatSize))
	expect(t, "STAT", rsp, proto.ResSuccess)
	if len(out) != proto.StatSize {
		t.Fatalf("dog's STAT got %d bytes, want %d", len(out), proto.StatSize)
	}
	rsp, out = do(t, c, proto.NewRequest(proto.OpStat), nil, make([]byte, proto.StatSize+proto.StatExtSize))
	expect(t, "STAT", rsp, proto.ResSuccess)
	var ext proto.StatExt
	if len(out) != proto.StatSize+proto.StatExtSize || ext.Unmarshal(out[proto.StatSize:]) != nil || ext.DegradedReads != 0 {
		t.Fatalf("extended STAT: %d bytes, %+v", len(out), ext)
	}
}
