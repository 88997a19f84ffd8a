package server_test

import (
	"encoding/binary"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestSnapshotTableGainsNoReferences: once a VDI is a snapshot, a write
// that would set a new nonzero data_vdi_id entry in its inode is READONLY
// (QEMU then resends its index update to the working VDI); rewriting an
// entry with its value, zeroing entries (dog's delete) and header writes
// (the tag) still succeed.
func TestSnapshotTableGainsNoReferences(t *testing.T) {
	_, c, vid := formatted(t)
	entry := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	write := func(what string, oid uint64, off uint32, data []byte, want proto.Result) {
		t.Helper()
		req := objReq(proto.OpWriteObj, oid, off)
		req.Flags |= proto.FlagCmdWrite
		rsp, _ := do(t, c, req, data, nil)
		expect(t, what, rsp, want)
	}
	create := objReq(proto.OpCreateAndWriteObj, proto.VidToDataOid(vid, 0), 0)
	create.Flags |= proto.FlagCmdWrite
	rsp, _ := do(t, c, create, []byte("data"), nil)
	expect(t, "create object 0", rsp, proto.ResSuccess)
	inode := proto.VidToVdiOid(vid)
	write("index entry 0 of the working VDI", inode, uint32(proto.DataVdiIDOff(0)), entry(vid), proto.ResSuccess)
	expect(t, "snapshot", newVdi(t, c, "test", 64<<20, 1, vid), proto.ResSuccess)

	write("new entry 1 in the snapshot", inode, uint32(proto.DataVdiIDOff(1)), entry(vid), proto.ResReadonly)
	write("entries 0-1 with entry 1 new", inode, uint32(proto.DataVdiIDOff(0)), append(entry(vid), entry(vid)...), proto.ResReadonly)
	write("entry 0 rewritten with its value", inode, uint32(proto.DataVdiIDOff(0)), entry(vid), proto.ResSuccess)
	write("tag", inode, proto.InodeTagOffset, []byte("tag\x00"), proto.ResSuccess)
	write("entry 0 zeroed", inode, uint32(proto.DataVdiIDOff(0)), entry(0), proto.ResSuccess)
	rsp, out := readObj(t, c, inode, uint32(proto.DataVdiIDOff(0)), 8)
	expect(t, "read the snapshot's table", rsp, proto.ResSuccess)
	if binary.LittleEndian.Uint64(out) != 0 {
		t.Fatalf("snapshot table % x, want zeros", out)
	}
}
