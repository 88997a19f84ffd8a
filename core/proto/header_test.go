package proto

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// at is a little-endian field of size 1, 2, 4 or 8 bytes at off, as the
// offset tables of docs/protocol.md state them.
type at struct {
	off, size int
	v         uint64
}

// image lays fields out in a zeroed buffer of n bytes.
func image(n int, fields ...at) []byte {
	b := make([]byte, n)
	for _, f := range fields {
		for i := 0; i < f.size; i++ {
			b[f.off+i] = byte(f.v >> (8 * i))
		}
	}
	return b
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeReq(t *testing.T, s string) (Request, []byte) {
	t.Helper()
	b := unhex(s)
	var r Request
	if err := r.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return r, b
}

func decodeRsp(t *testing.T, s string) (Response, []byte) {
	t.Helper()
	b := unhex(s)
	var r Response
	if err := r.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return r, b
}

func checkReqBytes(t *testing.T, r *Request, want []byte) {
	t.Helper()
	var got [HeaderSize]byte
	r.Marshal(got[:])
	if !bytes.Equal(got[:], want) {
		t.Errorf("Marshal\n got %x\nwant %x", got, want)
	}
}

func checkRspBytes(t *testing.T, r *Response, want []byte) {
	t.Helper()
	var got [HeaderSize]byte
	r.Marshal(got[:])
	if !bytes.Equal(got[:], want) {
		t.Errorf("Marshal\n got %x\nwant %x", got, want)
	}
}

func TestSizes(t *testing.T) {
	// Encode a zero value into a buffer of 0xff bytes, larger than the
	// record: the record's bytes must all be written, the rest untouched.
	covers := func(size int, marshal func([]byte)) (bool, bool) {
		b := bytes.Repeat([]byte{0xff}, size+16)
		marshal(b)
		return bytes.Count(b[:size], []byte{0}) == size, bytes.Count(b[size:], []byte{0xff}) == 16
	}
	tests := []struct {
		name      string
		const_    int
		want      int
		marshal   func([]byte) // nil when the encoder allocates
		allocated int          // length of the allocated encoding
	}{
		{"sd_req", HeaderSize, 48, func(b []byte) { (&Request{}).Marshal(b) }, 0},
		{"sd_rsp", HeaderSize, 48, func(b []byte) { (&Response{}).Marshal(b) }, 0},
		{"sd_inode", InodeSize, 12587576, nil, 0},
		{"sd_inode header", InodeHeaderSize, 4664, func(b []byte) { (&Inode{}).MarshalHeader(b) }, 0},
		{"sheepdog_vdi_attr", AttrSize, 66320, nil, len((&VdiAttr{}).Marshal())},
		{"sd_node", NodeSize, 80, func(b []byte) { (&Node{}).Marshal(b) }, 0},
		{"cluster_info", ClusterInfoSize, 491568, nil, len((&ClusterInfo{}).Marshal())},
		{"vdi_state", VdiStateSize, 1428, func(b []byte) { (&VdiState{}).Marshal(b) }, 0},
		{"epoch_log header", EpochLogHeaderSize, 48, func(b []byte) { (&EpochLog{}).MarshalHeader(b, 0) }, 0},
		{"recovery_state", RecoveryStateSize, 24, nil, len((&RecoveryState{}).Marshal())},
	}
	for _, tt := range tests {
		if tt.const_ != tt.want {
			t.Errorf("%s: size constant %d, want %d", tt.name, tt.const_, tt.want)
		}
		if tt.marshal != nil {
			all, rest := covers(tt.want, tt.marshal)
			if !all {
				t.Errorf("%s: Marshal leaves bytes of the %d-byte record unwritten", tt.name, tt.want)
			}
			if !rest {
				t.Errorf("%s: Marshal writes past %d bytes", tt.name, tt.want)
			}
		}
		if tt.allocated != 0 && tt.allocated != tt.want {
			t.Errorf("%s: Marshal returns %d bytes, want %d", tt.name, tt.allocated, tt.want)
		}
	}
	if GrefOffset != 4198968 || DataVdiIDOffset != 4664 || GrefOffset+8*MaxDataIndexes != InodeSize {
		t.Errorf("inode layout: data_vdi_id @%d, gref @%d, end %d", DataVdiIDOffset, GrefOffset, GrefOffset+8*MaxDataIndexes)
	}
}

func TestShortHeader(t *testing.T) {
	for _, n := range []int{0, 1, 47} {
		b := make([]byte, n)
		if err := new(Request).Unmarshal(b); err != ErrShortHeader {
			t.Errorf("Request.Unmarshal(%d bytes) = %v, want ErrShortHeader", n, err)
		}
		if err := new(Response).Unmarshal(b); err != ErrShortHeader {
			t.Errorf("Response.Unmarshal(%d bytes) = %v, want ErrShortHeader", n, err)
		}
	}
	// Longer input: the header is the first 48 bytes.
	b := append(unhex("0a8200000000000000000000008007000000000000000000000000000000000000000000000000000000000000000000"), 0xee, 0xee)
	var r Request
	if err := r.Unmarshal(b); err != nil || r.Opcode != OpGetNodeList || r.DataLength != 491520 {
		t.Errorf("Unmarshal of 50 bytes = %+v, %v", r, err)
	}
}

// The tests below decode headers from dog-wire.log and check each field of
// the typed views against the values dog and sheep meant to send.

func TestCaptureMakeFS(t *testing.T) {
	// dog cluster format -c 1
	r, raw := decodeReq(t, "0a84010000000000000000000600000000000000000000004889173a90d5076b01000400000000000000000000000000")
	if r.ProtoVer != SheepProtoVer || r.Opcode != OpMakeFS || r.Flags != FlagCmdWrite || r.Epoch != 0 || r.ID != 0 || r.DataLength != 6 {
		t.Errorf("header = %+v", r)
	}
	want := ClusterArgs{Ctime: 0x6b07d5903a178948, Copies: 1, Flags: ClusterFlagAutoVnodes}
	if got := r.Cluster(); got != want {
		t.Errorf("Cluster() = %+v, want %+v", got, want)
	}
	if SheepTimeSeconds(want.Ctime) != 0x6b07d590 {
		t.Errorf("ctime seconds = %#x", SheepTimeSeconds(want.Ctime))
	}
	checkReqBytes(t, &r, raw)
	// Rebuild it from scratch the way a client would.
	n := NewRequest(OpMakeFS)
	n.Flags = FlagCmdWrite
	n.DataLength = uint32(len("plain\x00"))
	n.SetCluster(want)
	checkReqBytes(t, &n, raw)

	rsp, raw := decodeRsp(t, "008400000100000000000000000000000000000000000000000000000000000000000000000000000000000000000000")
	if rsp.Opcode != OpMakeFS || rsp.Epoch != 1 || rsp.Result != ResSuccess || rsp.DataLength != 0 {
		t.Errorf("reply = %+v", rsp)
	}
	checkRspBytes(t, &rsp, raw)
}

func TestCaptureStatCluster(t *testing.T) {
	// Before format: result = WAIT_FOR_FORMAT, no payload.
	rsp, raw := decodeRsp(t, "008700000000000000000000000000001600000000000000000000000000000000000000000000000000000000000000")
	if rsp.Result != ResWaitForFormat || rsp.DataLength != 0 || rsp.Epoch != 0 {
		t.Errorf("reply = %+v", rsp)
	}
	checkRspBytes(t, &rsp, raw)

	// dog cluster info -v asks for logs with room for one node.
	r, raw := decodeReq(t, "0a8700000000000000000000800000000000000000000000000000000000000000000000000000000100000000000000")
	if r.DataLength != EpochLogHeaderSize+NodeSize {
		t.Errorf("data_length = %d", r.DataLength)
	}
	if got := r.Cluster(); got != (ClusterArgs{NodesNr: 1}) {
		t.Errorf("Cluster() = %+v, want nodes_nr 1", got)
	}
	checkReqBytes(t, &r, raw)
}

func TestCaptureNewVdi(t *testing.T) {
	tests := []struct {
		what    string
		req     string
		want    VdiArgs
		rsp     string
		result  Result
		wantRsp VdiRsp
	}{
		{
			what:    "dog vdi create Alice 64M",
			req:     "021101000000000000000000000100000000000400000000000000000000000000000000000000000000000000000000",
			want:    VdiArgs{VdiSize: 64 << 20},
			rsp:     "00110000010000000000000000000000000000000000000067d115000000000001160000000000000000000000000000",
			wantRsp: VdiRsp{VdiID: 0x15d167, Copies: 1, BlockSizeShift: 22},
		},
		{
			what:    "dog vdi create -P Pre 8M",
			req:     "021101000000000000000000000100000000800000000000000000000000000000000000000000000000000000000000",
			want:    VdiArgs{VdiSize: 8 << 20},
			rsp:     "00110000010000000000000000000000000000000000000026fa5a000000000001160000000000000000000000000000",
			wantRsp: VdiRsp{VdiID: 0x5afa26, Copies: 1, BlockSizeShift: 22},
		},
		{
			what:    "dog vdi snapshot -s s1 Alice",
			req:     "02110100000000000000000000010000000000040000000067d115000100001601000000000000000000000000000000",
			want:    VdiArgs{VdiSize: 64 << 20, BaseVdiID: 0x15d167, Copies: 1, BlockSizeShift: 22, SnapID: 1},
			rsp:     "00110000010000000000000000000000000000000000000068d115000000000001160000000000000000000000000000",
			wantRsp: VdiRsp{VdiID: 0x15d168, Copies: 1, BlockSizeShift: 22},
		},
		{
			what:    "dog vdi clone -s s1 Alice Charlie",
			req:     "02110100000000000000000000010000000000040000000067d115000100001600000000000000000000000000000000",
			want:    VdiArgs{VdiSize: 64 << 20, BaseVdiID: 0x15d167, Copies: 1, BlockSizeShift: 22},
			rsp:     "00110000010000000000000000000000000000000000000081a83c000000000001160000000000000000000000000000",
			wantRsp: VdiRsp{VdiID: 0x3ca881, Copies: 1, BlockSizeShift: 22},
		},
		{
			what: "dog vdi create Alice 64M (exists)",
			req:  "021101000000000000000000000100000000000400000000000000000000000000000000000000000000000000000000",
			want: VdiArgs{VdiSize: 64 << 20},
			rsp:  "001100000100000000000000000000000400000000000000687f00000000000001160000000000000000000000000000",
			// sheep leaves stale bytes in the vdi fields of an error reply.
			result:  ResVdiExist,
			wantRsp: VdiRsp{VdiID: 0x7f68, Copies: 1, BlockSizeShift: 22},
		},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			r, raw := decodeReq(t, tt.req)
			if r.ProtoVer != ProtoVer || r.Opcode != OpNewVdi || r.Flags != FlagCmdWrite || r.DataLength != MaxVdiLen {
				t.Errorf("header = %+v", r)
			}
			if got := r.Vdi(); got != tt.want {
				t.Errorf("Vdi() = %+v, want %+v", got, tt.want)
			}
			checkReqBytes(t, &r, raw)
			n := NewRequest(OpNewVdi)
			n.Flags = FlagCmdWrite
			n.DataLength = MaxVdiLen
			n.SetVdi(tt.want)
			checkReqBytes(t, &n, raw)

			rsp, raw := decodeRsp(t, tt.rsp)
			if rsp.Opcode != OpNewVdi || rsp.Epoch != 1 || rsp.Result != tt.result || rsp.DataLength != 0 {
				t.Errorf("reply = %+v", rsp)
			}
			if got := rsp.Vdi(); got != tt.wantRsp {
				t.Errorf("Response.Vdi() = %+v, want %+v", got, tt.wantRsp)
			}
			checkRspBytes(t, &rsp, raw)
			var m Response
			m.Opcode, m.Epoch, m.Result = OpNewVdi, 1, tt.result
			m.SetVdi(tt.wantRsp)
			checkRspBytes(t, &m, raw)
		})
	}
}

func TestCaptureGetVdiInfo(t *testing.T) {
	// dog vdi read Nope 0 512
	rsp, raw := decodeRsp(t, "001400000100000000000000000000000800000000000000000000000000000000000000000000000000000000000000")
	if rsp.Result != ResNoVdi || rsp.Vdi() != (VdiRsp{}) {
		t.Errorf("reply = %+v", rsp)
	}
	checkRspBytes(t, &rsp, raw)
	// dog vdi snapshot -s s1 Alice: the tag is not taken yet.
	rsp, raw = decodeRsp(t, "001400000100000000000000000000000e00000000000000000000000000000000000000000000000000000000000000")
	if rsp.Result != ResNoTag {
		t.Errorf("reply = %+v", rsp)
	}
	checkRspBytes(t, &rsp, raw)
	r, raw := decodeReq(t, "021401000000000000000000000200000000000000000000000000000000000000000000000000000000000000000000")
	if r.Opcode != OpGetVdiInfo || r.DataLength != MaxVdiLen+MaxVdiTagLen || r.Vdi() != (VdiArgs{}) {
		t.Errorf("request = %+v", r)
	}
	checkReqBytes(t, &r, raw)
}

func TestCaptureObjectIO(t *testing.T) {
	tests := []struct {
		what  string
		hdr   string
		op    Opcode
		flags uint16
		dlen  uint32
		want  ObjArgs
	}{
		{
			"READ_OBJ of Pre's whole inode", "0202080000000000000000003812c0000000000026fa5a80000000000000000000000000000000000000000000000000",
			OpReadObj, FlagCmdDirect, InodeSize, ObjArgs{Oid: VidToVdiOid(0x5afa26)},
		},
		{
			"CREATE_AND_WRITE_OBJ of Pre's data object 0 (preallocation)", "020109000000000000000000000000000000000026fa5a00000000000000000001000000000000000000000000000000",
			OpCreateAndWriteObj, FlagCmdWrite | FlagCmdDirect, 0, ObjArgs{Oid: VidToDataOid(0x5afa26, 0), Copies: 1},
		},
		{
			"CREATE_AND_WRITE_OBJ of Pre's data object 1", "020109000000000000000000000000000100000026fa5a00000000000000000001000000000000000000000000000000",
			OpCreateAndWriteObj, FlagCmdWrite | FlagCmdDirect, 0, ObjArgs{Oid: VidToDataOid(0x5afa26, 1), Copies: 1},
		},
		{
			"WRITE_OBJ of data_vdi_id[0]", "020309000000000000000000040000000000000026fa5a80000000000000000001000000000000003812000000000000",
			OpWriteObj, FlagCmdWrite | FlagCmdDirect, 4, ObjArgs{Oid: VidToVdiOid(0x5afa26), Copies: 1, Offset: DataVdiIDOff(0)},
		},
		{
			"WRITE_OBJ of data_vdi_id[1]", "020309000000000000000000040000000000000026fa5a80000000000000000001000000000000003c12000000000000",
			OpWriteObj, FlagCmdWrite | FlagCmdDirect, 4, ObjArgs{Oid: VidToVdiOid(0x5afa26), Copies: 1, Offset: DataVdiIDOff(1)},
		},
		{
			"READ_OBJ of data_vdi_id[0:2]", "020208000000000000000000080000000000000026fa5a80000000000000000000000000000000003812000000000000",
			OpReadObj, FlagCmdDirect, 8, ObjArgs{Oid: VidToVdiOid(0x5afa26), Offset: DataVdiIDOffset},
		},
		{
			"WRITE_OBJ of the snapshot tag", "020301000000000000000000000100000000000067d11580000000000000000001000000000000000001000000000000",
			OpWriteObj, FlagCmdWrite, MaxVdiTagLen, ObjArgs{Oid: VidToVdiOid(0x15d167), Copies: 1, Offset: InodeTagOffset},
		},
		{
			"READ_OBJ of Alice's data (dog vdi read)", "020200000000000000000000001000000000000067d11500000000000000000000000000000000000000000000000000",
			OpReadObj, 0, 4096, ObjArgs{Oid: VidToDataOid(0x15d167, 0)},
		},
		{
			"READ_OBJ of an attribute object", "02020800000000000000000010030100949abee267d11520000000000000000000000000000000000000000000000000",
			OpReadObj, FlagCmdDirect, AttrSize, ObjArgs{Oid: VidToAttrOid(0x15d167, 0xe2be9a94)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			r, raw := decodeReq(t, tt.hdr)
			if r.ProtoVer != ProtoVer || r.Opcode != tt.op || r.Flags != tt.flags || r.DataLength != tt.dlen {
				t.Errorf("header = %+v", r)
			}
			if got := r.Obj(); got != tt.want {
				t.Errorf("Obj() = %+v, want %+v", got, tt.want)
			}
			checkReqBytes(t, &r, raw)
			n := NewRequest(tt.op)
			n.Flags, n.DataLength = tt.flags, tt.dlen
			n.SetObj(tt.want)
			checkReqBytes(t, &n, raw)
		})
	}
	// Object replies carry only the result.
	rsp, raw := decodeRsp(t, "0002000001000000000000003812c0000000000000000000000000000000000000000000000000000000000000000000")
	if rsp.Opcode != OpReadObj || rsp.Result != ResSuccess || rsp.DataLength != InodeSize || rsp.Arg != [28]byte{} {
		t.Errorf("reply = %+v", rsp)
	}
	checkRspBytes(t, &rsp, raw)
}

func TestCaptureGetVdiAttr(t *testing.T) {
	// dog vdi setattr Alice owner alice
	r, raw := decodeReq(t, "0a8901010000000000000000100301000000000000000000000000000000000000000000000000000000000000000000")
	if r.ProtoVer != SheepProtoVer || r.Opcode != OpGetVdiAttr || r.Flags != FlagCmdWrite|FlagCmdCreat || r.DataLength != AttrSize {
		t.Errorf("request = %+v", r)
	}
	checkReqBytes(t, &r, raw)
	rsp, raw := decodeRsp(t, "00890000010000000000000000000000000000000000000067d11500949abee201000000000000000000000000000000")
	want := VdiRsp{VdiID: VdiNameHash("Alice"), AttrID: 0xe2be9a94, Copies: 1}
	if got := rsp.Vdi(); got != want || rsp.Result != ResSuccess {
		t.Errorf("Vdi() = %+v (%v), want %+v", got, rsp.Result, want)
	}
	checkRspBytes(t, &rsp, raw)
}

func TestCaptureGetNodeList(t *testing.T) {
	r, raw := decodeReq(t, "0a8200000000000000000000008007000000000000000000000000000000000000000000000000000000000000000000")
	if r.ProtoVer != SheepProtoVer || r.Opcode != OpGetNodeList || r.Flags != 0 || r.DataLength != MaxNodes*NodeSize {
		t.Errorf("request = %+v", r)
	}
	checkReqBytes(t, &r, raw)
	rsp, raw := decodeRsp(t, "008200000100000000000000500000000000000001000000000000000000000000000000000000000000000000000000")
	if rsp.Opcode != OpGetNodeList || rsp.Epoch != 1 || rsp.Result != ResSuccess || rsp.DataLength != NodeSize {
		t.Errorf("reply = %+v", rsp)
	}
	if got := rsp.Node(); got != (NodeRsp{NrNodes: 1}) {
		t.Errorf("Node() = %+v, want nr_nodes 1", got)
	}
	checkRspBytes(t, &rsp, raw)
}

func TestRequestViewOffsets(t *testing.T) {
	addr := [16]byte{12: 10, 13: 0, 14: 0, 15: 7}
	tests := []struct {
		name  string
		set   func(*Request)
		want  []at
		check func(*Request) bool
	}{
		{
			"obj",
			func(r *Request) {
				r.SetObj(ObjArgs{Oid: 0x80fd381500000000, CowOid: 0x00fd381400000009, Copies: 3, CopyPolicy: 0x42,
					ECIndex: 5, TgtEpoch: 0x11223344, Offset: 0xfffffff0})
			},
			[]at{{16, 8, 0x80fd381500000000}, {24, 8, 0x00fd381400000009}, {32, 1, 3}, {33, 1, 0x42}, {34, 1, 5},
				{36, 4, 0x11223344}, {40, 4, 0xfffffff0}},
			func(r *Request) bool {
				return r.Obj() == ObjArgs{Oid: 0x80fd381500000000, CowOid: 0x00fd381400000009, Copies: 3, CopyPolicy: 0x42,
					ECIndex: 5, TgtEpoch: 0x11223344, Offset: 0xfffffff0}
			},
		},
		{
			"vdi",
			func(r *Request) {
				r.SetVdi(VdiArgs{VdiSize: 1 << 42, BaseVdiID: 0xfd3815, Copies: 2, CopyPolicy: 0x21, StorePolicy: 1,
					BlockSizeShift: 23, SnapID: 0x0a0b0c0d, Type: 1})
			},
			[]at{{16, 8, 1 << 42}, {24, 4, 0xfd3815}, {28, 1, 2}, {29, 1, 0x21}, {30, 1, 1}, {31, 1, 23},
				{32, 4, 0x0a0b0c0d}, {36, 4, 1}},
			func(r *Request) bool {
				return r.Vdi() == VdiArgs{VdiSize: 1 << 42, BaseVdiID: 0xfd3815, Copies: 2, CopyPolicy: 0x21, StorePolicy: 1,
					BlockSizeShift: 23, SnapID: 0x0a0b0c0d, Type: 1}
			},
		},
		{
			"cluster",
			func(r *Request) {
				r.SetCluster(ClusterArgs{Oid: 0x123456789abcdef0, Ctime: 0x6b07d5903a178948, Copies: 3, CopyPolicy: 0x42,
					Flags: 0x3f, Tag: 0xdeadbeef, NodesNr: 6144, BlockSizeShift: 22})
			},
			[]at{{16, 8, 0x123456789abcdef0}, {24, 8, 0x6b07d5903a178948}, {32, 1, 3}, {33, 1, 0x42}, {34, 2, 0x3f},
				{36, 4, 0xdeadbeef}, {40, 4, 6144}, {44, 1, 22}},
			func(r *Request) bool {
				return r.Cluster() == ClusterArgs{Oid: 0x123456789abcdef0, Ctime: 0x6b07d5903a178948, Copies: 3, CopyPolicy: 0x42,
					Flags: 0x3f, Tag: 0xdeadbeef, NodesNr: 6144, BlockSizeShift: 22}
			},
		},
		{
			"vdi_state",
			func(r *Request) {
				r.SetVdiState(VdiStateArgs{OldVid: 0x7c2b25, NewVid: 0x7c2b26, Copies: 3, SetBitmap: 1, CopyPolicy: 0x42, BlockSizeShift: 22})
			},
			[]at{{16, 4, 0x7c2b25}, {20, 4, 0x7c2b26}, {24, 1, 3}, {25, 1, 1}, {26, 1, 0x42}, {27, 1, 22}},
			func(r *Request) bool {
				return r.VdiState() == VdiStateArgs{OldVid: 0x7c2b25, NewVid: 0x7c2b26, Copies: 3, SetBitmap: 1, CopyPolicy: 0x42, BlockSizeShift: 22}
			},
		},
		{
			"ref",
			func(r *Request) {
				r.SetRef(RefArgs{Oid: LedgerOid(VidToDataOid(0x7c2b25, 9)), Generation: 7, Count: 0xfffffffe})
			},
			[]at{{16, 8, LedgerBit | 0x7c2b2500000009}, {24, 4, 7}, {28, 4, 0xfffffffe}},
			func(r *Request) bool {
				return r.Ref() == RefArgs{Oid: LedgerOid(VidToDataOid(0x7c2b25, 9)), Generation: 7, Count: 0xfffffffe}
			},
		},
		{
			"forw",
			func(r *Request) { r.SetForw(ForwArgs{Oid: 0x00fd381500000001, Addr: addr, Port: 7001}) },
			[]at{{16, 8, 0x00fd381500000001}, {36, 1, 10}, {39, 1, 7}, {40, 2, 7001}},
			func(r *Request) bool { return r.Forw() == ForwArgs{Oid: 0x00fd381500000001, Addr: addr, Port: 7001} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{ProtoVer: SheepProtoVer, Opcode: OpReadPeer, Flags: FlagCmdRecovery | FlagCmdWildcard,
				Epoch: 0x01020304, ID: 0x05060708, DataLength: 0x090a0b0c}
			tt.set(&r)
			want := image(HeaderSize, append([]at{{0, 1, SheepProtoVer}, {1, 1, uint64(OpReadPeer)}, {2, 2, 0x180},
				{4, 4, 0x01020304}, {8, 4, 0x05060708}, {12, 4, 0x090a0b0c}}, tt.want...)...)
			checkReqBytes(t, &r, want)
			var d Request
			if err := d.Unmarshal(want); err != nil {
				t.Fatal(err)
			}
			if d != r {
				t.Errorf("Unmarshal = %+v, want %+v", d, r)
			}
			if !tt.check(&d) {
				t.Errorf("view of the decoded header differs from what was set")
			}
		})
	}
}

func TestResponseViewOffsets(t *testing.T) {
	var digest [20]byte
	for i := range digest {
		digest[i] = byte(0xa0 + i)
	}
	digestAt := make([]at, 20)
	for i := range digestAt {
		digestAt[i] = at{24 + i, 1, uint64(0xa0 + i)}
	}
	tests := []struct {
		name  string
		set   func(*Response)
		want  []at
		check func(*Response) bool
	}{
		{
			"vdi",
			func(r *Response) {
				r.SetVdi(VdiRsp{VdiID: 0xfd3815, AttrID: 0xe2be9a94, Copies: 3, BlockSizeShift: 22})
			},
			[]at{{24, 4, 0xfd3815}, {28, 4, 0xe2be9a94}, {32, 1, 3}, {33, 1, 22}},
			func(r *Response) bool {
				return r.Vdi() == VdiRsp{VdiID: 0xfd3815, AttrID: 0xe2be9a94, Copies: 3, BlockSizeShift: 22}
			},
		},
		{
			"node",
			func(r *Response) {
				r.SetNode(NodeRsp{NrNodes: 6144, StoreSize: 1 << 40, StoreFree: 0x0102030405060708})
			},
			[]at{{20, 4, 6144}, {32, 8, 1 << 40}, {40, 8, 0x0102030405060708}},
			func(r *Response) bool {
				return r.Node() == NodeRsp{NrNodes: 6144, StoreSize: 1 << 40, StoreFree: 0x0102030405060708}
			},
		},
		{
			"hash",
			func(r *Response) { r.SetHash(digest) },
			digestAt,
			func(r *Response) bool { return r.Hash() == digest },
		},
		{
			"cluster_default",
			func(r *Response) {
				r.SetClusterDefault(ClusterDefaultRsp{NrCopies: 3, CopyPolicy: 0x42, BlockSizeShift: 22})
			},
			[]at{{20, 1, 3}, {21, 1, 0x42}, {22, 1, 22}},
			func(r *Response) bool {
				return r.ClusterDefault() == ClusterDefaultRsp{NrCopies: 3, CopyPolicy: 0x42, BlockSizeShift: 22}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Response{Opcode: OpGetHash, Epoch: 0x01020304, ID: 0x05060708, DataLength: 0x090a0b0c, Result: ResOldNodeVer}
			tt.set(&r)
			want := image(HeaderSize, append([]at{{1, 1, uint64(OpGetHash)},
				{4, 4, 0x01020304}, {8, 4, 0x05060708}, {12, 4, 0x090a0b0c}, {16, 4, 0x81}}, tt.want...)...)
			checkRspBytes(t, &r, want)
			var d Response
			if err := d.Unmarshal(want); err != nil {
				t.Fatal(err)
			}
			if d != r {
				t.Errorf("Unmarshal = %+v, want %+v", d, r)
			}
			if !tt.check(&d) {
				t.Errorf("view of the decoded header differs from what was set")
			}
		})
	}
}

func TestNewRequest(t *testing.T) {
	tests := []struct {
		op   Opcode
		want uint8
	}{
		{OpCreateAndWriteObj, 0x02},
		{OpReadObj, 0x02},
		{OpNewVdi, 0x02},
		{OpGetClusterDefault, 0x02},
		{0x7f, 0x02},
		{0x80, 0x0a},
		{OpGetNodeList, 0x0a},
		{OpReadPeer, 0x0a},
		{OpGetVnodes, 0x0a},
	}
	for _, tt := range tests {
		r := NewRequest(tt.op)
		if r.ProtoVer != tt.want || r.Opcode != tt.op || r.Flags != 0 || r.DataLength != 0 || r.Arg != [32]byte{} {
			t.Errorf("NewRequest(%#x) = %+v, want proto_ver %#x", tt.op, r, tt.want)
		}
		if tt.op.Internal() != (tt.want == SheepProtoVer) {
			t.Errorf("%#x.Internal() = %v", tt.op, tt.op.Internal())
		}
	}
}

func TestPeerOp(t *testing.T) {
	tests := []struct{ op, want Opcode }{
		{OpCreateAndWriteObj, OpCreateAndWritePeer},
		{OpReadObj, OpReadPeer},
		{OpWriteObj, OpWritePeer},
		{OpRemoveObj, OpRemovePeer},
		{OpDecrefObj, OpDecrefPeer},
		// Everything else maps to itself.
		{OpDiscardObj, OpDiscardObj},
		{OpNewVdi, OpNewVdi},
		{OpGetHash, OpGetHash},
		{OpReadPeer, OpReadPeer},
		{OpDecrefPeer, OpDecrefPeer},
		{0, 0},
		{0xff, 0xff},
	}
	for _, tt := range tests {
		if got := tt.op.PeerOp(); got != tt.want {
			t.Errorf("%#x.PeerOp() = %#x, want %#x", tt.op, got, tt.want)
		}
	}
	// Wire values of the pairs (docs/protocol.md §2).
	if OpCreateAndWritePeer != 0xA3 || OpReadPeer != 0xA4 || OpWritePeer != 0xA5 || OpRemovePeer != 0xA6 || OpDecrefPeer != 0xC2 {
		t.Error("peer opcode values differ from §2")
	}
}
