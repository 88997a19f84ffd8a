package server_test

import (
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestGetVdiAttr replays dog's setattr/getattr of dog-wire.log: the reply
// names the attribute object by the name-hash vid and the slot, and the
// object holds the record.
func TestGetVdiAttr(t *testing.T) {
	_, c, _ := formatted(t)
	expect(t, "create Alice", newVdi(t, c, "Alice", 64<<20, 0, 0), proto.ResSuccess)
	attr := func(flags uint16, value string) proto.Response {
		req := proto.NewRequest(proto.OpGetVdiAttr)
		req.Flags |= flags
		rec := proto.VdiAttr{Name: "Alice", Key: "owner", Value: []byte(value)}
		rsp, _ := do(t, c, req, rec.Marshal(), nil)
		return rsp
	}
	want := proto.VdiRsp{VdiID: 0x15d167, AttrID: 0xe2be9a94, Copies: 1}

	rsp := attr(0, "")
	expect(t, "getattr before setattr", rsp, proto.ResNoObj)
	rsp = attr(proto.FlagCmdCreat, "alice")
	expect(t, "setattr", rsp, proto.ResSuccess)
	if got := rsp.Vdi(); got != want {
		t.Fatalf("setattr reply %+v, want %+v", got, want)
	}
	rsp = attr(0, "")
	expect(t, "getattr", rsp, proto.ResSuccess)
	if got := rsp.Vdi(); got != want {
		t.Fatalf("getattr reply %+v, want %+v", got, want)
	}
	rsp, out := readObj(t, c, proto.VidToAttrOid(want.VdiID, want.AttrID), 0, proto.AttrSize)
	expect(t, "read attribute object", rsp, proto.ResSuccess)
	var a proto.VdiAttr
	if err := a.Unmarshal(out); err != nil || a.Name != "Alice" || a.Key != "owner" || string(a.Value) != "alice" || a.Ctime == 0 {
		t.Fatalf("attribute object %+v %v", a, err)
	}
	expect(t, "exclusive setattr", attr(proto.FlagCmdCreat|proto.FlagCmdExcl, "bob"), proto.ResVdiExist)
	expect(t, "delete", attr(proto.FlagCmdDel, ""), proto.ResSuccess)
	expect(t, "getattr after delete", attr(0, ""), proto.ResNoObj)

	req := proto.NewRequest(proto.OpGetVdiAttr)
	rsp, _ = do(t, c, req, nil, nil)
	expect(t, "no record", rsp, proto.ResInvalidParms)
	rec := proto.VdiAttr{Name: "Nobody", Key: "owner"}
	rsp, _ = do(t, c, proto.NewRequest(proto.OpGetVdiAttr), rec.Marshal(), nil)
	expect(t, "unknown VDI", rsp, proto.ResNoVdi)
}
