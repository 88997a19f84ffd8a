package server_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// PUNCH_PEER zeroes [offset, offset+length) of this node's copy, the
// length an 8-byte payload; a range outside the object or a payload of
// another size is INVALID_PARMS (what a node without the op answers too,
// the gateway's cue to write zeros instead); CACHE leaves it for
// FLUSH_PEER; like every peer op it is gated by the sender's epoch.
func TestPunchPeer(t *testing.T) {
	s, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 0)
	const size = 4 << 20
	data := pattern(3, size)
	rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, oid, 0), data, nil)
	expect(t, "create", rsp, proto.ResSuccess)

	punch := func(off uint32, n uint64, flags uint16, epoch uint32, payload int) proto.Response {
		t.Helper()
		r := objReq(proto.OpPunchPeer, oid, off)
		r.Epoch = epoch
		r.Flags |= flags
		b := make([]byte, payload)
		if payload >= 8 {
			binary.LittleEndian.PutUint64(b, n)
		}
		rsp, _ := do(t, c, r, b, nil)
		return rsp
	}
	readBack := func(what string) {
		t.Helper()
		rsp, got := readObj(t, c, oid, 0, size)
		expect(t, "read "+what, rsp, proto.ResSuccess)
		if !bytes.Equal(got, data) {
			t.Fatalf("object after %s differs", what)
		}
	}

	expect(t, "PUNCH_PEER", punch(5000, 70000, 0, 1, 8), proto.ResSuccess)
	clear(data[5000 : 5000+70000])
	readBack("PUNCH_PEER")
	if st := s.st.Stats(); st.Dirty != 0 {
		t.Fatalf("a synced PUNCH_PEER left %d objects unsynced", st.Dirty)
	}

	expect(t, "PUNCH_PEER with CACHE", punch(1<<20, 1<<20, proto.FlagCmdCache, 1, 8), proto.ResSuccess)
	clear(data[1<<20 : 2<<20])
	readBack("PUNCH_PEER with CACHE")
	if st := s.st.Stats(); st.Dirty != 1 {
		t.Fatalf("PUNCH_PEER with CACHE: %d objects unsynced, want 1", st.Dirty)
	}

	for _, tc := range []struct {
		what    string
		off     uint32
		n       uint64
		epoch   uint32
		payload int
		want    proto.Result
	}{
		{"past the end", size - 10, 20, 1, 8, proto.ResInvalidParms},
		{"a huge length", 0, 1 << 63, 1, 8, proto.ResInvalidParms},
		{"a short payload", 0, 0, 1, 4, proto.ResInvalidParms},
		{"a long payload", 0, 10, 1, 16, proto.ResInvalidParms},
		{"an old epoch", 0, 10, 0, 8, proto.ResOldNodeVer},
	} {
		expect(t, "PUNCH_PEER "+tc.what, punch(tc.off, tc.n, 0, tc.epoch, tc.payload), tc.want)
	}
	readBack("refused punches")
}
