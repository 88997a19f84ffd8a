package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/server"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/core/volume"
	"github.com/sheepdog-go/sheepdog/store"
)

// sheep is one single-node sheep wired as cmd/sheep wires it, with the
// Local cluster driver, serving on a loopback port.
type sheep struct {
	srv  *server.Server
	addr string
	self proto.Node
	st   *store.Store
	cl   *cluster.Local
}

const formatCtime = 0x6600000000000001

func startSheep(t *testing.T) *sheep {
	t.Helper()
	return startSheepWith(t, func(l *cluster.Local) cluster.Driver { return l })
}

// startSheepWith starts a sheep whose handler sees the Local driver as
// wrap makes it (a test's own membership, say).
func startSheepWith(t *testing.T, wrap func(*cluster.Local) cluster.Driver) *sheep {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(store.Config{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort(l.Addr().String())), NrVnodes: proto.DefaultVnodes}
	self.Zone = self.DefaultZone()
	log := slog.New(slog.DiscardHandler)
	peers := gateway.NewPeers()
	locks := &store.Locks{}
	gw := gateway.New(self.NodeID, st, cl, peers, locks, log)
	h := server.NewHandler(server.Config{
		Self: self, Store: st, Cluster: wrap(cl), Gateway: gw, Vdi: vdi.New(gw, cl, log), Log: log, Locks: locks,
		Members: func() []proto.Node { return []proto.Node{self} },
		Now:     func() time.Time { return time.Unix(1700000000, 0) },
	})
	srv := server.New(h, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		// Close waits for every connection's requests: a leaked
		// connection shows up as a hang here.
		closed := make(chan struct{})
		go func() { srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("server Close hangs")
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		gw.Close()
		peers.Close()
		st.Close()
	})
	return &sheep{srv: srv, addr: l.Addr().String(), self: self, st: st, cl: cl}
}

func (s *sheep) dial(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *sheep) rawConn(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// do sends one request and fails the test on a transport error; the
// result is for the caller to check.
func do(t *testing.T, c *client.Client, req proto.Request, wdata, rbuf []byte) (proto.Response, []byte) {
	t.Helper()
	rsp, n, err := c.Do(context.Background(), &req, wdata, rbuf)
	if err != nil {
		t.Fatalf("op %#x: %v", req.Opcode, err)
	}
	if rsp.Opcode != req.Opcode || rsp.ID != req.ID {
		t.Fatalf("op %#x id %d answered as op %#x id %d", req.Opcode, req.ID, rsp.Opcode, rsp.ID)
	}
	return rsp, rbuf[:n]
}

func expect(t *testing.T, what string, rsp proto.Response, want proto.Result) {
	t.Helper()
	if rsp.Result != want {
		t.Fatalf("%s: %v, want %v", what, rsp.Result, want)
	}
}

func makeFS(t *testing.T, c *client.Client, copies uint8, storeName string) proto.Response {
	t.Helper()
	req := proto.NewRequest(proto.OpMakeFS)
	req.SetCluster(proto.ClusterArgs{Copies: copies, Ctime: formatCtime})
	rsp, _ := do(t, c, req, append([]byte(storeName), 0), nil)
	return rsp
}

func newVdi(t *testing.T, c *client.Client, name string, size uint64, snapid, base uint32) proto.Response {
	t.Helper()
	req := proto.NewRequest(proto.OpNewVdi)
	req.SetVdi(proto.VdiArgs{VdiSize: size, SnapID: snapid, BaseVdiID: base})
	rsp, _ := do(t, c, req, proto.VdiName(name, "", false), nil)
	return rsp
}

func readObj(t *testing.T, c *client.Client, oid uint64, off uint32, n int) (proto.Response, []byte) {
	t.Helper()
	req := proto.NewRequest(proto.OpReadObj)
	req.SetObj(proto.ObjArgs{Oid: oid, Offset: off})
	return do(t, c, req, nil, make([]byte, n))
}

func objReq(op proto.Opcode, oid uint64, off uint32) proto.Request {
	req := proto.NewRequest(op)
	req.SetObj(proto.ObjArgs{Oid: oid, Offset: off})
	return req
}

// formatted starts a sheep, formats it with one copy and creates "test"
// (vid 0x7c2b25, 256 MiB: 64 objects).
func formatted(t *testing.T) (*sheep, *client.Client, uint32) {
	t.Helper()
	s := startSheep(t)
	c := s.dial(t)
	expect(t, "format", makeFS(t, c, 1, "plain"), proto.ResSuccess)
	rsp := newVdi(t, c, "test", 256<<20, 0, 0)
	expect(t, "create", rsp, proto.ResSuccess)
	return s, c, rsp.Vdi().VdiID
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i*7)
	}
	return b
}

func TestFormatLifecycle(t *testing.T) {
	s := startSheep(t)
	c := s.dial(t)

	// Waiting for format: only forced ops run.
	rsp := newVdi(t, c, "test", 1<<30, 0, 0)
	expect(t, "NEW_VDI before format", rsp, proto.ResWaitForFormat)
	if rsp.Epoch != 0 {
		t.Errorf("reply epoch before format = %d", rsp.Epoch)
	}
	rsp, _ = readObj(t, c, proto.VidToDataOid(1, 0), 0, 10)
	expect(t, "READ_OBJ before format", rsp, proto.ResWaitForFormat)

	rsp, out := do(t, c, proto.NewRequest(proto.OpGetNodeList), nil, make([]byte, 4*proto.NodeSize))
	expect(t, "GET_NODE_LIST", rsp, proto.ResSuccess)
	nodes, err := proto.UnmarshalNodes(out, int(rsp.Node().NrNodes))
	if err != nil || len(nodes) != 1 || nodes[0] != s.self || len(out) != proto.NodeSize {
		t.Errorf("node list = %+v (%d bytes, %v), want only this sheep", nodes, len(out), err)
	}
	rsp, out = do(t, c, proto.NewRequest(proto.OpReadVdis), nil, make([]byte, proto.NrVdis/8))
	expect(t, "READ_VDIS", rsp, proto.ResSuccess)
	if len(out) != proto.NrVdis/8 || !bytes.Equal(out, make([]byte, proto.NrVdis/8)) {
		t.Errorf("READ_VDIS before format: %d bytes, not all clear", len(out))
	}
	stat := proto.NewRequest(proto.OpStatCluster)
	stat.SetCluster(proto.ClusterArgs{NodesNr: 1})
	rsp, _ = do(t, c, stat, nil, make([]byte, 10*(proto.EpochLogHeaderSize+proto.NodeSize)))
	expect(t, "STAT_CLUSTER before format", rsp, proto.ResWaitForFormat)
	rsp, _ = do(t, c, proto.NewRequest(proto.OpGetClusterDefault), nil, nil)
	expect(t, "GET_CLUSTER_DEFAULT", rsp, proto.ResSuccess)

	// Bad formats change nothing.
	expect(t, "format with an unknown store", makeFS(t, c, 1, "btrfs"), proto.ResNoStore)
	expect(t, "format with too many copies", makeFS(t, c, proto.MaxCopies+1, "plain"), proto.ResInvalidParms)
	rsp = newVdi(t, c, "test", 1<<30, 0, 0)
	expect(t, "NEW_VDI after refused formats", rsp, proto.ResWaitForFormat)

	rsp = makeFS(t, c, 2, "plain")
	expect(t, "MAKE_FS", rsp, proto.ResSuccess)
	if rsp.Epoch != 1 {
		t.Errorf("MAKE_FS reply epoch = %d, want 1", rsp.Epoch)
	}

	rsp, out = do(t, c, stat, nil, make([]byte, 10*(proto.EpochLogHeaderSize+proto.NodeSize)))
	expect(t, "STAT_CLUSTER", rsp, proto.ResSuccess)
	var log proto.EpochLog
	if len(out) != proto.EpochLogHeaderSize+proto.NodeSize || log.Unmarshal(out, 1) != nil {
		t.Fatalf("STAT_CLUSTER returned %d bytes, want one record", len(out))
	}
	if log.Epoch != 1 || log.Ctime != formatCtime || log.NrCopies != 2 || log.DrvName != "plain" || len(log.Nodes) != 1 || log.Nodes[0] != s.self {
		t.Errorf("epoch record = %+v", log)
	}
	rsp, _ = do(t, c, proto.NewRequest(proto.OpGetClusterDefault), nil, nil)
	if d := rsp.ClusterDefault(); d.NrCopies != 2 || d.BlockSizeShift != proto.DefaultBlockSizeShift {
		t.Errorf("cluster default = %+v", d)
	}

	rsp = newVdi(t, c, "test", 1<<30, 0, 0)
	expect(t, "NEW_VDI", rsp, proto.ResSuccess)
	if v := rsp.Vdi(); v.VdiID != 0x7c2b25 || v.Copies != 2 || v.BlockSizeShift != proto.DefaultBlockSizeShift || rsp.Epoch != 1 {
		t.Errorf("NEW_VDI reply = %+v epoch %d", v, rsp.Epoch)
	}
	expect(t, "NEW_VDI again", newVdi(t, c, "test", 1<<30, 0, 0), proto.ResVdiExist)
	_, out = do(t, c, proto.NewRequest(proto.OpReadVdis), nil, make([]byte, proto.NrVdis/8))
	if out[0x7c2b25/8]&(1<<(0x7c2b25%8)) == 0 {
		t.Error("READ_VDIS does not show the new VDI")
	}
}

func TestProtoVersions(t *testing.T) {
	s := startSheep(t)
	c := s.dial(t)
	for _, tc := range []struct {
		name string
		op   proto.Opcode
		ver  uint8
		want proto.Result
	}{
		{"internal op, sheep version", proto.OpGetNodeList, proto.SheepProtoVer, proto.ResSuccess},
		{"internal op, public version", proto.OpGetNodeList, proto.ProtoVer, proto.ResVerMismatch},
		{"internal op, v0.9 version", proto.OpGetNodeList, 0x09, proto.ResVerMismatch},
		{"internal op, version 0", proto.OpGetNodeList, 0, proto.ResVerMismatch},
		{"public op, version 0 (QEMU I/O)", proto.OpReadVdis, 0, proto.ResSuccess},
		{"public op, version 1 (QEMU)", proto.OpReadVdis, 1, proto.ResSuccess},
		{"public op, version 2", proto.OpReadVdis, proto.ProtoVer, proto.ResSuccess},
		{"public op, version 3", proto.OpReadVdis, 3, proto.ResVerMismatch},
		{"public op, sheep version", proto.OpReadVdis, proto.SheepProtoVer, proto.ResVerMismatch},
		{"unknown public op", 0x70, proto.ProtoVer, proto.ResInvalidParms},
		{"unknown internal op", 0xEE, proto.SheepProtoVer, proto.ResInvalidParms},
		{"legacy op without handler", proto.OpSnapshot, proto.SheepProtoVer, proto.ResInvalidParms},
		{"unknown internal op, wrong version", 0xEE, proto.ProtoVer, proto.ResVerMismatch},
	} {
		req := proto.Request{Opcode: tc.op, ProtoVer: tc.ver}
		rsp, _ := do(t, c, req, nil, make([]byte, proto.NrVdis/8))
		if rsp.Result != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, rsp.Result, tc.want)
		}
		if rsp.Result != proto.ResSuccess && rsp.DataLength != 0 {
			t.Errorf("%s: a refusal carries %d bytes", tc.name, rsp.DataLength)
		}
	}
	expect(t, "format", makeFS(t, c, 1, "plain"), proto.ResSuccess)
	flush := objReq(proto.OpFlushVdi, proto.VidToVdiOid(0x7c2b25), 0)
	rsp, _ := do(t, c, flush, nil, nil)
	expect(t, "FLUSH_VDI (no write-back cache)", rsp, proto.ResInvalidParms)
}

// TestReplyBoundedByDataLength: the server never sends more than the
// request's data_length (docs/protocol.md §1.1); the stream stays in sync.
func TestReplyBoundedByDataLength(t *testing.T) {
	s, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 0)
	data := pattern(3, 8192)
	req := objReq(proto.OpCreateAndWriteObj, oid, 0)
	rsp, _ := do(t, c, req, data, nil)
	expect(t, "create", rsp, proto.ResSuccess)
	for i := 0; i < 2; i++ {
		if res, err := s.cl.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindEpoch, Time: int64(1700000001 + i), Nodes: []proto.Node{s.self}}); err != nil || res != proto.ResSuccess {
			t.Fatalf("epoch: %v %v", res, err)
		}
	}
	rec := proto.EpochLogHeaderSize + proto.NodeSize

	for _, tc := range []struct {
		name    string
		req     proto.Request
		rbuf    int
		want    proto.Result
		wantLen int
		check   func(out []byte) bool
	}{
		{"short object read", objReq(proto.OpReadObj, oid, 0), 100, proto.ResSuccess, 100,
			func(out []byte) bool { return bytes.Equal(out, data[:100]) }},
		{"short read at an offset", objReq(proto.OpReadObj, oid, 8000), 10, proto.ResSuccess, 10,
			func(out []byte) bool { return bytes.Equal(out, data[8000:8010]) }},
		{"read past the written part", objReq(proto.OpReadObj, oid, 8190), 4, proto.ResSuccess, 4,
			func(out []byte) bool { return bytes.Equal(out, append(bytes.Clone(data[8190:]), 0, 0)) }},
		{"read with no room", objReq(proto.OpReadObj, oid, 0), 0, proto.ResSuccess, 0, nil},
		{"stat cluster, room for one record", statCluster(1), rec, proto.ResSuccess, rec,
			func(out []byte) bool { return epochsOf(out, rec) == "3" }},
		{"stat cluster, room for two and a half", statCluster(1), rec * 5 / 2, proto.ResSuccess, 2 * rec,
			func(out []byte) bool { return epochsOf(out, rec) == "32" }},
		{"stat cluster, room for ten", statCluster(1), 10 * rec, proto.ResSuccess, 3 * rec,
			func(out []byte) bool { return epochsOf(out, rec) == "321" }},
		{"stat cluster, no room", statCluster(1), rec - 1, proto.ResSuccess, 0, nil},
		{"stat cluster, nodes do not fit the record", statCluster(0), 10 * rec, proto.ResSuccess, 3 * proto.EpochLogHeaderSize,
			func(out []byte) bool { return epochsOf(out, proto.EpochLogHeaderSize) == "321" }},
		{"bitmap into a small buffer", proto.NewRequest(proto.OpReadVdis), 1 << 20, proto.ResBufferSmall, 0, nil},
		{"node list into a small buffer", proto.NewRequest(proto.OpGetNodeList), proto.NodeSize - 1, proto.ResBufferSmall, 0, nil},
		{"store list cut to the buffer", proto.NewRequest(proto.OpGetStoreList), 4, proto.ResSuccess, 4,
			func(out []byte) bool { return string(out) == "tree" }},
		{"object list into a small buffer", proto.NewRequest(proto.OpGetObjList), 8, proto.ResBufferSmall, 0, nil},
	} {
		rsp, out := do(t, c, tc.req, nil, make([]byte, tc.rbuf))
		if rsp.Result != tc.want || int(rsp.DataLength) != tc.wantLen || len(out) != tc.wantLen {
			t.Errorf("%s: %v with %d bytes (header says %d), want %v with %d", tc.name, rsp.Result, len(out), rsp.DataLength, tc.want, tc.wantLen)
			continue
		}
		if tc.check != nil && !tc.check(out) {
			t.Errorf("%s: wrong data", tc.name)
		}
	}
	// Still in sync.
	rsp, out := readObj(t, c, oid, 0, 8)
	expect(t, "final read", rsp, proto.ResSuccess)
	if !bytes.Equal(out, data[:8]) {
		t.Error("stream out of sync after the short replies")
	}
}

func statCluster(nodes uint32) proto.Request {
	req := proto.NewRequest(proto.OpStatCluster)
	req.SetCluster(proto.ClusterArgs{NodesNr: nodes})
	return req
}

// epochsOf lists the epoch numbers of the records in out, as digits.
func epochsOf(out []byte, rec int) string {
	var s []byte
	for i := 0; i+rec <= len(out); i += rec {
		s = append(s, byte('0'+binary.LittleEndian.Uint32(out[i+16:])))
	}
	return string(s)
}

func TestNoDataRepliesHaveZeroLength(t *testing.T) {
	_, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 1)
	for _, tc := range []struct {
		name  string
		req   proto.Request
		wdata []byte
		rbuf  int
	}{
		{"create", objReq(proto.OpCreateAndWriteObj, oid, 0), pattern(1, 4096), 0},
		{"write", objReq(proto.OpWriteObj, oid, 512), pattern(2, 4096), 0},
		{"remove, with room offered", objReq(proto.OpRemoveObj, oid, 0), nil, 4096},
		{"cluster default, with room offered", proto.NewRequest(proto.OpGetClusterDefault), nil, 4096},
		{"snapshot", func() proto.Request {
			r := proto.NewRequest(proto.OpNewVdi)
			r.SetVdi(proto.VdiArgs{SnapID: 1, BaseVdiID: vid})
			return r
		}(), proto.VdiName("test", "", false), 0},
		{"delete", proto.NewRequest(proto.OpDelVdi), proto.VdiName("test", "", false), 0},
	} {
		rsp, _, err := c.Do(context.Background(), &tc.req, tc.wdata, make([]byte, tc.rbuf))
		if err != nil || rsp.Result != proto.ResSuccess {
			t.Fatalf("%s: %v %v", tc.name, rsp.Result, err)
		}
		if rsp.DataLength != 0 {
			t.Errorf("%s: reply data_length %d, want 0", tc.name, rsp.DataLength)
		}
		if rsp.ProtoVer != 0 || rsp.Flags != 0 {
			t.Errorf("%s: reply proto_ver %d flags %#x, want 0", tc.name, rsp.ProtoVer, rsp.Flags)
		}
	}
}

// TestVdiRequests: name and name+tag payloads, snapshots and their
// read-only objects, locks and delete, as dog and QEMU send them.
func TestVdiRequests(t *testing.T) {
	_, c, vid := formatted(t)
	dataOid := proto.VidToDataOid(vid, 0)
	rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, dataOid, 0), pattern(1, 512), nil)
	expect(t, "create data", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, objReq(proto.OpWriteObj, proto.VidToVdiOid(vid), proto.DataVdiIDOff(0)), binary.LittleEndian.AppendUint32(nil, vid), nil)
	expect(t, "point data_vdi_id[0] at it", rsp, proto.ResSuccess)
	// dog writes the tag into the inode, then asks for the snapshot.
	tag := make([]byte, proto.MaxVdiTagLen)
	copy(tag, "snap1")
	rsp, _ = do(t, c, objReq(proto.OpWriteObj, proto.VidToVdiOid(vid), proto.InodeTagOffset), tag, nil)
	expect(t, "write tag", rsp, proto.ResSuccess)
	rsp = newVdi(t, c, "test", 0, 1, vid)
	expect(t, "snapshot", rsp, proto.ResSuccess)
	working := rsp.Vdi().VdiID
	if working != vid+1 {
		t.Fatalf("snapshot: new working vid %#x, want %#x", working, vid+1)
	}

	info := func(payload []byte, snapid uint32) proto.Response {
		req := proto.NewRequest(proto.OpGetVdiInfo)
		req.SetVdi(proto.VdiArgs{SnapID: snapid})
		rsp, _ := do(t, c, req, payload, nil)
		return rsp
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		snapid  uint32
		want    proto.Result
		wantVid uint32
	}{
		{"name", proto.VdiName("test", "", false), 0, proto.ResSuccess, working},
		{"name and tag (512 bytes)", proto.VdiName("test", "snap1", true), 0, proto.ResSuccess, vid},
		{"name and empty tag", proto.VdiName("test", "", true), 0, proto.ResSuccess, working},
		{"name and snapid", proto.VdiName("test", "", false), 1, proto.ResSuccess, vid},
		{"unknown tag", proto.VdiName("test", "snap2", true), 0, proto.ResNoTag, 0},
		{"unknown name", proto.VdiName("nope", "", false), 0, proto.ResNoVdi, 0},
		{"odd payload length", make([]byte, 300), 0, proto.ResInvalidParms, 0},
		{"no payload", nil, 0, proto.ResInvalidParms, 0},
	} {
		rsp := info(tc.payload, tc.snapid)
		if rsp.Result != tc.want || rsp.Vdi().VdiID != tc.wantVid {
			t.Errorf("GET_VDI_INFO %s: %v vid %#x, want %v vid %#x", tc.name, rsp.Result, rsp.Vdi().VdiID, tc.want, tc.wantVid)
		}
	}

	req := proto.NewRequest(proto.OpNewVdi)
	rsp, _ = do(t, c, req, proto.VdiName("other", "", true), nil)
	expect(t, "NEW_VDI with a 512-byte payload", rsp, proto.ResInvalidParms)

	rsp, _ = do(t, c, objReq(proto.OpWriteObj, dataOid, 0), []byte("x"), nil)
	expect(t, "write to a snapshot's object", rsp, proto.ResReadonly)
	rsp, _ = do(t, c, objReq(proto.OpCreateAndWriteObj, dataOid, 0), []byte("x"), nil)
	expect(t, "re-create of a snapshot's object", rsp, proto.ResReadonly)
	rsp, _ = do(t, c, objReq(proto.OpWriteObj, proto.VidToVdiOid(vid), proto.InodeTagOffset), tag, nil)
	expect(t, "write to a snapshot's inode", rsp, proto.ResSuccess)

	lock := proto.NewRequest(proto.OpLockVdi)
	rsp, _ = do(t, c, lock, proto.VdiName("test", "", false), nil)
	if rsp.Result != proto.ResSuccess || rsp.Vdi().VdiID != working {
		t.Errorf("LOCK_VDI: %v vid %#x", rsp.Result, rsp.Vdi().VdiID)
	}
	release := proto.NewRequest(proto.OpReleaseVdi)
	release.SetVdi(proto.VdiArgs{BaseVdiID: working})
	rsp, _ = do(t, c, release, proto.VdiName("test", "", false), nil)
	expect(t, "RELEASE_VDI", rsp, proto.ResSuccess)

	del := proto.NewRequest(proto.OpDelVdi)
	rsp, _ = do(t, c, del, proto.VdiName("test", "snap1", true), nil)
	if rsp.Result != proto.ResSuccess || rsp.Vdi().VdiID != vid {
		t.Errorf("DEL_VDI by tag: %v vid %#x", rsp.Result, rsp.Vdi().VdiID)
	}
	expect(t, "lookup of the deleted snapshot", info(proto.VdiName("test", "snap1", true), 0), proto.ResNoTag)
	rsp, _ = readObj(t, c, dataOid, 0, 8)
	expect(t, "read of an object the working VDI still shares", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, del, proto.VdiName("test", "", false), nil)
	expect(t, "DEL_VDI of the working VDI", rsp, proto.ResSuccess)
	expect(t, "lookup after deleting everything", info(proto.VdiName("test", "", false), 0), proto.ResNoVdi)
	rsp, _ = readObj(t, c, dataOid, 0, 8)
	expect(t, "read of a reclaimed object", rsp, proto.ResNoObj)
}

// TestPipelinedRequests: 64 requests sent back to back on one connection
// before any reply is read all come back once, with their own id, opcode
// and data.
func TestPipelinedRequests(t *testing.T) {
	s, c, vid := formatted(t)
	const n = 64
	for i := 0; i < n; i++ {
		rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, proto.VidToDataOid(vid, uint32(i)), 0), pattern(byte(i), 4096), nil)
		expect(t, "create", rsp, proto.ResSuccess)
	}

	conn := s.rawConn(t)
	var batch []byte
	type sent struct {
		op  proto.Opcode
		idx uint32
	}
	byID := map[uint32]sent{}
	for i := 0; i < n; i++ {
		oid := proto.VidToDataOid(vid, uint32(i))
		var req proto.Request
		var payload []byte
		if i%2 == 0 {
			req = objReq(proto.OpWriteObj, oid, 4096)
			payload = pattern(byte(i)+100, 4096)
			req.Flags = proto.FlagCmdWrite
			req.DataLength = uint32(len(payload))
		} else {
			req = objReq(proto.OpReadObj, oid, 0)
			req.DataLength = 4096
		}
		req.ID = uint32(0x1000 + i*3) // ids need not be sequential
		byID[req.ID] = sent{req.Opcode, uint32(i)}
		var hb [proto.HeaderSize]byte
		req.Marshal(hb[:])
		batch = append(append(batch, hb[:]...), payload...)
	}
	if _, err := conn.Write(batch); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for k := 0; k < n; k++ {
		rsp, data := readReply(t, conn)
		s, ok := byID[rsp.ID]
		if !ok {
			t.Fatalf("reply with unknown or repeated id %#x", rsp.ID)
		}
		delete(byID, rsp.ID)
		if rsp.Opcode != s.op || rsp.Result != proto.ResSuccess {
			t.Errorf("id %#x: op %#x result %v, want op %#x success", rsp.ID, rsp.Opcode, rsp.Result, s.op)
		}
		if s.op == proto.OpReadObj && !bytes.Equal(data, pattern(byte(s.idx), 4096)) {
			t.Errorf("read of object %d returned wrong data", s.idx)
		}
		if s.op == proto.OpWriteObj && len(data) != 0 {
			t.Errorf("write of object %d returned %d bytes", s.idx, len(data))
		}
	}
	for i := 0; i < n; i += 2 {
		_, out := readObj(t, c, proto.VidToDataOid(vid, uint32(i)), 0, 8192)
		if !bytes.Equal(out[:4096], pattern(byte(i), 4096)) || !bytes.Equal(out[4096:], pattern(byte(i)+100, 4096)) {
			t.Errorf("object %d does not hold its pipelined write", i)
		}
	}
}

// TestConcurrentClientCalls: 64 goroutines share one client; each creates,
// writes and reads back its own object.
func TestConcurrentClientCalls(t *testing.T) {
	_, c, vid := formatted(t)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			oid := proto.VidToDataOid(vid, uint32(i))
			steps := []struct {
				req   proto.Request
				wdata []byte
			}{
				{objReq(proto.OpCreateAndWriteObj, oid, 0), pattern(byte(i), 1000)},
				{objReq(proto.OpWriteObj, oid, 1000), pattern(byte(i)+1, 1000)},
			}
			for _, st := range steps {
				if _, _, err := c.Call(ctx, &st.req, st.wdata, nil); err != nil {
					t.Errorf("object %d: %v", i, err)
					return
				}
			}
			buf := make([]byte, 2000)
			req := objReq(proto.OpReadObj, oid, 0)
			if _, n, err := c.Call(ctx, &req, nil, buf); err != nil || n != 2000 {
				t.Errorf("object %d read: %d %v", i, n, err)
				return
			}
			if !bytes.Equal(buf, append(pattern(byte(i), 1000), pattern(byte(i)+1, 1000)...)) {
				t.Errorf("object %d read back someone else's data", i)
			}
		}()
	}
	wg.Wait()
}

// TestRepliesInCompletionOrder: a request that cannot finish yet does not
// hold back the replies of requests sent after it. A peer read from a
// newer epoch is parked until this node reaches that epoch.
func TestRepliesInCompletionOrder(t *testing.T) {
	s, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 0)
	rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, oid, 0), pattern(9, 4096), nil)
	expect(t, "create", rsp, proto.ResSuccess)

	conn := s.rawConn(t)
	parked := objReq(proto.OpReadPeer, oid, 0)
	parked.Epoch, parked.ID, parked.DataLength = 2, 1, 4096
	big := objReq(proto.OpReadObj, oid, 0)
	big.ID, big.DataLength = 2, proto.DataObjSize
	var batch []byte
	var hb [proto.HeaderSize]byte
	for _, r := range []proto.Request{parked, big} {
		r.Marshal(hb[:])
		batch = append(batch, hb[:]...)
	}
	for i := 0; i < 32; i++ {
		small := proto.NewRequest(proto.OpGetClusterDefault)
		small.ID = uint32(100 + i)
		small.Marshal(hb[:])
		batch = append(batch, hb[:]...)
	}
	if _, err := conn.Write(batch); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := map[uint32]bool{}
	for len(got) < 33 {
		rsp, data := readReply(t, conn)
		if rsp.ID == parked.ID {
			t.Fatalf("the parked request was answered (%v) before the %d requests behind it", rsp.Result, 33-len(got))
		}
		if rsp.Result != proto.ResSuccess || (rsp.ID == big.ID && len(data) != proto.DataObjSize) {
			t.Errorf("id %d: %v, %d bytes", rsp.ID, rsp.Result, len(data))
		}
		got[rsp.ID] = true
	}
	// Epoch 2 arrives; the parked read completes.
	if res, err := s.cl.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindEpoch, Time: 1700000001, Nodes: []proto.Node{s.self}}); err != nil || res != proto.ResSuccess {
		t.Fatalf("epoch: %v %v", res, err)
	}
	rsp, data := readReply(t, conn)
	if rsp.ID != parked.ID || rsp.Result != proto.ResSuccess || !bytes.Equal(data, pattern(9, 4096)) || rsp.Epoch != 2 {
		t.Errorf("parked request: id %d %v epoch %d, %d bytes", rsp.ID, rsp.Result, rsp.Epoch, len(data))
	}
}

func readReply(t *testing.T, conn net.Conn) (proto.Response, []byte) {
	t.Helper()
	var hb [proto.HeaderSize]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		t.Fatalf("read reply header: %v", err)
	}
	var rsp proto.Response
	rsp.Unmarshal(hb[:])
	data := make([]byte, rsp.DataLength)
	if _, err := io.ReadFull(conn, data); err != nil {
		t.Fatalf("read reply data: %v", err)
	}
	return rsp, data
}

// TestClientsThatVanish: connections that die mid-request, or send
// garbage lengths, leave the server serving everyone else (and Close,
// in the cleanup, still returns).
func TestClientsThatVanish(t *testing.T) {
	s, c, vid := formatted(t)
	oid := proto.VidToDataOid(vid, 0)
	rsp, _ := do(t, c, objReq(proto.OpCreateAndWriteObj, oid, 0), pattern(5, proto.DataObjSize), nil)
	expect(t, "create", rsp, proto.ResSuccess)

	header := func(req proto.Request) []byte {
		var hb [proto.HeaderSize]byte
		req.Marshal(hb[:])
		return hb[:]
	}
	write := objReq(proto.OpWriteObj, oid, 0)
	write.Flags, write.DataLength = proto.FlagCmdWrite, 4096
	bigRead := objReq(proto.OpReadObj, oid, 0)
	bigRead.DataLength = proto.DataObjSize
	var many []byte
	for i := 0; i < 64; i++ {
		bigRead.ID = uint32(i)
		many = append(many, header(bigRead)...)
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"half a header", header(write)[:20]},
		{"a header and part of its payload", append(header(write), make([]byte, 100)...)},
		{"a large read, then gone", header(bigRead)},
		{"64 large reads, then gone", many},
	} {
		conn := s.rawConn(t)
		if _, err := conn.Write(tc.send); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		conn.Close()
	}

	// A payload no request may have: refused, then the connection closes
	// (its stream cannot be resynchronised).
	conn := s.rawConn(t)
	huge := objReq(proto.OpWriteObj, oid, 0)
	huge.Flags, huge.DataLength, huge.ID = proto.FlagCmdWrite, 1<<30, 77
	if _, err := conn.Write(header(huge)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rsp, _ = readReply(t, conn)
	if rsp.ID != 77 || rsp.Result != proto.ResInvalidParms {
		t.Errorf("oversized payload: id %d %v", rsp.ID, rsp.Result)
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection after an oversized payload: %v, want EOF", err)
	}

	// Everyone else is still served, by the old connection and new ones.
	rsp, out := readObj(t, c, oid, 0, 16)
	if rsp.Result != proto.ResSuccess || !bytes.Equal(out, pattern(5, 16)) {
		t.Errorf("old connection after the others vanished: %v", rsp.Result)
	}
	c2 := s.dial(t)
	rsp, _ = do(t, c2, proto.NewRequest(proto.OpGetClusterDefault), nil, nil)
	expect(t, "new connection", rsp, proto.ResSuccess)
}

// TestVolumeOverTheWire: a volume driven through client.Objects against
// the server: allocation, copy-on-write after a snapshot, discard.
func TestVolumeOverTheWire(t *testing.T) {
	_, c, vid := formatted(t)
	ctx := context.Background()
	objs := client.Objects{C: c}
	vol, err := volume.Open(ctx, objs, vid, false)
	if err != nil {
		t.Fatal(err)
	}
	objSize := vol.ObjectSize()
	data := pattern(11, int(objSize)+8192)
	if _, err := vol.WriteAt(data, objSize-4096); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint32{0, 1} {
		_, out := readObj(t, c, proto.VidToVdiOid(vid), proto.DataVdiIDOff(idx), 4)
		if binary.LittleEndian.Uint32(out) != vid {
			t.Errorf("inode data_vdi_id[%d] = %#x, want %#x", idx, binary.LittleEndian.Uint32(out), vid)
		}
	}

	rsp := newVdi(t, c, "test", 0, 1, vid)
	expect(t, "snapshot", rsp, proto.ResSuccess)
	working := rsp.Vdi().VdiID
	if _, err := vol.WriteAt([]byte("late"), 0); err == nil {
		t.Error("a write through the snapshot's old handle reached its objects")
	}
	wvol, err := volume.Open(ctx, objs, working, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wvol.WriteAt([]byte("new!"), objSize); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := wvol.ReadAt(got, objSize-4096); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	copy(want[4096:], "new!")
	if !bytes.Equal(got, want) {
		t.Error("the working VDI reads wrong data after copy-on-write")
	}
	_, out := readObj(t, c, proto.VidToDataOid(vid, 1), 0, 8)
	if !bytes.Equal(out, data[4096:4104]) {
		t.Error("copy-on-write changed the snapshot's object")
	}
	if wvol.Owner(1) != working || wvol.Owner(0) != vid {
		t.Errorf("owners after copy-on-write: %#x %#x", wvol.Owner(0), wvol.Owner(1))
	}

	// Old QEMU's DISCARD_OBJ clears the entry and removes the object.
	rsp, _ = do(t, c, objReq(proto.OpDiscardObj, proto.VidToDataOid(working, 1), 0), nil, nil)
	expect(t, "DISCARD_OBJ", rsp, proto.ResSuccess)
	_, out = readObj(t, c, proto.VidToVdiOid(working), proto.DataVdiIDOff(1), 4)
	if binary.LittleEndian.Uint32(out) != 0 {
		t.Error("DISCARD_OBJ left the inode entry")
	}
	rsp, _ = readObj(t, c, proto.VidToDataOid(working, 1), 0, 8)
	expect(t, "read of a discarded object", rsp, proto.ResNoObj)
}

func TestKillNode(t *testing.T) {
	s := startSheep(t)
	c := s.dial(t)
	rsp, _ := do(t, c, proto.NewRequest(proto.OpKillNode), nil, nil)
	expect(t, "KILL_NODE", rsp, proto.ResSuccess)
	rsp, _ = do(t, c, proto.NewRequest(proto.OpGetNodeList), nil, make([]byte, proto.NodeSize))
	expect(t, "request to a killed node", rsp, proto.ResKilled)
}
