package server_test

import (
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// A client's object writes are stable when acknowledged even with CACHE,
// which QEMU sets by default (FLUSH_VDI answers INVALID_PARMS, so it
// would never flush them). A gateway's peer writes with CACHE are left
// for FLUSH_PEER, which syncs them.
func TestCacheFlagAndFlushPeer(t *testing.T) {
	s, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 0)

	req := objReq(proto.OpCreateAndWriteObj, oid, 0)
	req.Flags |= proto.FlagCmdCache
	rsp, _ := do(t, c, req, []byte("client"), nil)
	expect(t, "create with CACHE", rsp, proto.ResSuccess)
	req = objReq(proto.OpWriteObj, oid, 512)
	req.Flags |= proto.FlagCmdCache
	rsp, _ = do(t, c, req, []byte("client"), nil)
	expect(t, "write with CACHE", rsp, proto.ResSuccess)
	if st := s.st.Stats(); st.Dirty != 0 {
		t.Fatalf("client writes with CACHE left %d objects unsynced", st.Dirty)
	}

	peerReq := func(op proto.Opcode, oid uint64, flags uint16) proto.Request {
		r := objReq(op, oid, 0)
		r.Epoch = 1
		r.Flags |= flags
		return r
	}
	poid := proto.VidToDataOid(vid, 1)
	rsp, _ = do(t, c, peerReq(proto.OpCreateAndWritePeer, poid, proto.FlagCmdCache), []byte("peer"), nil)
	expect(t, "CREATE_AND_WRITE_PEER with CACHE", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, peerReq(proto.OpWritePeer, poid, proto.FlagCmdCache), []byte("peer"), nil)
	expect(t, "WRITE_PEER with CACHE", rsp, proto.ResSuccess)
	if st := s.st.Stats(); st.Dirty != 1 {
		t.Fatalf("peer writes with CACHE: %d unsynced objects, want 1", st.Dirty)
	}
	rsp, _ = do(t, c, peerReq(proto.OpFlushPeer, 0, 0), nil, nil)
	expect(t, "FLUSH_PEER", rsp, proto.ResSuccess)
	if st := s.st.Stats(); st.Dirty != 0 || st.Flushes != 1 || st.FlushedObjects != 1 {
		t.Fatalf("after FLUSH_PEER: %+v, want the one object flushed", st)
	}

	// FLUSH_PEER is a peer op: gated by the sender's epoch.
	r := peerReq(proto.OpFlushPeer, 0, 0)
	r.Epoch = 0
	rsp, _ = do(t, c, r, nil, nil)
	expect(t, "FLUSH_PEER of an old epoch", rsp, proto.ResOldNodeVer)
}
