package proto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// Payloads from dog-wire.log.
const (
	// GET_NODE_LIST reply: one sd_node. rb (bytes 0–23) holds a stale
	// pointer value (01 00 ...); our encoder writes zeros there.
	capturedNode = "0100000000000000000000000000000000000000000000000000000000000000000000007f000001141e00000000000000000000000000000000000000000000800000000000000000108ce312000000"
	// STAT_CLUSTER reply to nodes_nr = 0: one epoch_log header, no nodes.
	capturedEpochLog0 = "4889173a90d5076b000000000000000001000000000000000001000000000400706c61696e0000000000000000000000"
	// STAT_CLUSTER reply to nodes_nr = 1: one epoch_log with its node (rb
	// zeroed, as epoch files store it).
	capturedEpochLog1 = "4889173a90d5076b90d5076b0000000001000000010000000001000000000400706c61696e00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000007f000001141e00000000000000000000000000000000000000000000800000000000000000108ce312000000"
	// CLUSTER_INFO reply: the first 64 of 491568 bytes, and the digest of all.
	capturedClusterInfoHead = "0a000100010000004889173a90d5076b040001000116000000706c61696e00000000000000000000000000000000000001000000000000000000000000000000"
	capturedClusterInfoSHA  = "f7eb32fa3b58b32e5c37cb97e8190ed7a29c78d6ead78c9c8c9446c7a41abd2b"
	// GET_VDI_ATTR payloads of dog vdi setattr/getattr Alice owner [alice].
	capturedSetattrSHA = "ef7c62849b63e2e9b12661e68df078f5236399aa10f3b1428cb5ad17c8c45690"
	capturedGetattrSHA = "2fe6a4d40140a6a7deebdc1f4f52b89813081a0cd99b04e2ba376226814d083c"
)

// capturedSheep is the node of dog-wire.log: sheep on 127.0.0.1:7700.
var capturedSheep = Node{
	NodeID:   NodeID{Addr: [16]byte{12: 127, 15: 1}, Port: 7700},
	NrVnodes: 128,
	Zone:     0,
	Space:    81127018496,
}

// capturedClusterInfo rebuilds the full CLUSTER_INFO payload from its head
// and the node list: the digest proves the rebuild is byte-exact.
func capturedClusterInfo(tb testing.TB) []byte {
	tb.Helper()
	b := make([]byte, ClusterInfoSize)
	copy(b, unhex(capturedClusterInfoHead)[:48])
	copy(b[48:], unhex(capturedNode))
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != capturedClusterInfoSHA {
		tb.Fatalf("rebuilt cluster_info has digest %x", sum)
	}
	return b
}

func TestCaptureNode(t *testing.T) {
	raw := unhex(capturedNode)
	var n Node
	if err := n.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	if n != capturedSheep {
		t.Errorf("Unmarshal = %+v, want %+v", n, capturedSheep)
	}
	if n.String() != "127.0.0.1:7700" {
		t.Errorf("String() = %q", n.String())
	}
	out := bytes.Repeat([]byte{0xee}, NodeSize)
	n.Marshal(out)
	want := append(make([]byte, 24), raw[24:]...) // rb is zeroed
	if !bytes.Equal(out, want) {
		t.Errorf("Marshal\n got %x\nwant %x", out, want)
	}
}

func TestNodeOffsets(t *testing.T) {
	n := Node{
		NodeID: NodeID{
			Addr:   [16]byte{0: 0x20, 1: 0x01, 15: 0x42},
			Port:   0x1b58,
			IOAddr: [16]byte{12: 10, 13: 1, 14: 2, 15: 3},
			IOPort: 0x1b59,
		},
		NrVnodes: 0x1234,
		Zone:     0xdeadbeef,
		Space:    0x0102030405060708,
	}
	want := image(NodeSize, at{24, 1, 0x20}, at{25, 1, 0x01}, at{39, 1, 0x42}, at{40, 2, 0x1b58},
		at{54, 1, 10}, at{55, 1, 1}, at{56, 1, 2}, at{57, 1, 3}, at{58, 2, 0x1b59},
		at{64, 2, 0x1234}, at{68, 4, 0xdeadbeef}, at{72, 8, 0x0102030405060708})
	got := bytes.Repeat([]byte{0xee}, NodeSize)
	n.Marshal(got)
	if !bytes.Equal(got, want) {
		t.Errorf("Marshal\n got %x\nwant %x", got, want)
	}
	var d Node
	if err := d.Unmarshal(want); err != nil || d != n {
		t.Errorf("Unmarshal = %+v, %v", d, err)
	}
	// rb and the padding are ignored on decode.
	dirty := append([]byte(nil), want...)
	for _, i := range []int{0, 23, 60, 63, 66, 67} {
		dirty[i] = 0xff
	}
	if err := d.Unmarshal(dirty); err != nil || d != n {
		t.Errorf("Unmarshal with garbage in rb/padding = %+v, %v", d, err)
	}
	if err := d.Unmarshal(want[:NodeSize-1]); err == nil {
		t.Error("Unmarshal of 79 bytes succeeded")
	}
}

func TestUnmarshalNodes(t *testing.T) {
	nodes := []Node{
		capturedSheep,
		{NodeID: NodeID{Addr: [16]byte{12: 127, 15: 1}, Port: 7701}, NrVnodes: 64, Zone: 2, Space: 1 << 40},
		{NodeID: NodeID{Addr: [16]byte{12: 10, 15: 9}, Port: 7000}},
	}
	b := MarshalNodes(nodes)
	if len(b) != 3*NodeSize {
		t.Fatalf("MarshalNodes: %d bytes", len(b))
	}
	got, err := UnmarshalNodes(b, 3)
	if err != nil || !reflect.DeepEqual(got, nodes) {
		t.Errorf("UnmarshalNodes = %+v, %v", got, err)
	}
	// Fewer nodes than the buffer holds is fine; more is not.
	if got, err := UnmarshalNodes(b, 2); err != nil || !reflect.DeepEqual(got, nodes[:2]) {
		t.Errorf("UnmarshalNodes(2) = %+v, %v", got, err)
	}
	if got, err := UnmarshalNodes(nil, 0); err != nil || len(got) != 0 {
		t.Errorf("UnmarshalNodes(nil, 0) = %+v, %v", got, err)
	}
	for _, n := range []int{4, -1, math.MaxInt, math.MaxInt / NodeSize, 1 << 61, math.MinInt} {
		if _, err := UnmarshalNodes(b, n); err == nil {
			t.Errorf("UnmarshalNodes(%d bytes, %d) succeeded", len(b), n)
		}
	}
	if len(MarshalNodes(nil)) != 0 {
		t.Error("MarshalNodes(nil) is not empty")
	}
}

func TestNodeID(t *testing.T) {
	tests := []struct {
		ap       string
		addr     [16]byte
		str      string
		zone     uint32
		sameAddr bool // IP() gives the address back
	}{
		{"127.0.0.1:7000", [16]byte{12: 127, 15: 1}, "127.0.0.1:7000", 0x0100007f, true},
		{"10.0.0.2:7001", [16]byte{12: 10, 15: 2}, "10.0.0.2:7001", 0x0200000a, true},
		{"192.168.1.254:65535", [16]byte{12: 192, 13: 168, 14: 1, 15: 254}, "192.168.1.254:65535", 0xfe01a8c0, true},
		// IPv4-mapped input is stored in Sheepdog's form, not ::ffff-mapped.
		{"[::ffff:10.0.0.2]:7000", [16]byte{12: 10, 15: 2}, "10.0.0.2:7000", 0x0200000a, false},
		// IPv6 prints as "addr:port", as dog does.
		{"[fe80::1]:7000", [16]byte{0: 0xfe, 1: 0x80, 15: 1}, "fe80::1:7000", 0x01000000, true},
		// ::1 has 12 leading zero bytes but byte 12 is zero: it is IPv6
		// (Sheepdog's addr_to_str rule), not 0.0.0.1.
		{"[::1]:7000", [16]byte{15: 1}, "::1:7000", 0x01000000, true},
	}
	for _, tt := range tests {
		ap := netip.MustParseAddrPort(tt.ap)
		id := NodeIDFromAddrPort(ap)
		if id.Addr != tt.addr || id.Port != ap.Port() || id.IOAddr != [16]byte{} || id.IOPort != 0 {
			t.Errorf("NodeIDFromAddrPort(%s) = %+v", tt.ap, id)
		}
		if got := id.String(); got != tt.str {
			t.Errorf("%s: String() = %q, want %q", tt.ap, got, tt.str)
		}
		if got := id.DefaultZone(); got != tt.zone {
			t.Errorf("%s: DefaultZone() = %#x, want %#x", tt.ap, got, tt.zone)
		}
		if tt.sameAddr && id.IP() != ap.Addr() {
			t.Errorf("%s: IP() = %v", tt.ap, id.IP())
		}
	}
}

func TestNodeIDCompare(t *testing.T) {
	v4 := func(a, b, c, d byte, port uint16) NodeID {
		return NodeID{Addr: [16]byte{12: a, 13: b, 14: c, 15: d}, Port: port}
	}
	// Ascending in Sheepdog's order: memcmp of addr, then port.
	sorted := []NodeID{
		v4(10, 0, 0, 1, 7001),
		v4(10, 0, 0, 2, 7000),
		v4(127, 0, 0, 1, 6999),
		v4(127, 0, 0, 1, 7000),
		v4(127, 0, 0, 1, 7001),
		v4(127, 0, 0, 2, 1),
		{Addr: [16]byte{0: 0xfe, 1: 0x80, 15: 1}, Port: 1},
	}
	for i := range sorted {
		for j := range sorted {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := sorted[i].Compare(sorted[j]); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", sorted[i], sorted[j], got, want)
			}
		}
	}
	// io_addr does not take part in the order.
	a, b := v4(1, 2, 3, 4, 5), v4(1, 2, 3, 4, 5)
	b.IOAddr[15], b.IOPort = 9, 9
	if a.Compare(b) != 0 {
		t.Error("Compare looks at io_addr")
	}
}

func TestCaptureEpochLog(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		maxNodes int
		want     EpochLog
	}{
		{"nodes_nr 0", capturedEpochLog0, 0, EpochLog{
			Ctime: 0x6b07d5903a178948, Epoch: 1, NrCopies: 1, Flags: ClusterFlagAutoVnodes, DrvName: "plain", Nodes: []Node{},
		}},
		{"nodes_nr 1", capturedEpochLog1, 1, EpochLog{
			Ctime: 0x6b07d5903a178948, Time: 0x6b07d590, Epoch: 1, NrCopies: 1, Flags: ClusterFlagAutoVnodes, DrvName: "plain",
			Nodes: []Node{capturedSheep},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := unhex(tt.raw)
			if len(raw) != EpochLogHeaderSize+tt.maxNodes*NodeSize {
				t.Fatalf("record of %d bytes", len(raw))
			}
			var e EpochLog
			if err := e.Unmarshal(raw, tt.maxNodes); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e, tt.want) {
				t.Errorf("Unmarshal = %+v, want %+v", e, tt.want)
			}
			out := make([]byte, EpochLogHeaderSize)
			e.MarshalHeader(out, uint32(len(e.Nodes)))
			out = append(out, MarshalNodes(e.Nodes)...)
			if !bytes.Equal(out, raw) {
				t.Errorf("Marshal\n got %x\nwant %x", out, raw)
			}
		})
	}
	// The format's ctime and the log's plain time_t agree.
	if SheepTimeSeconds(tests[1].want.Ctime) != int64(tests[1].want.Time) {
		t.Error("ctime seconds differ from the epoch log time")
	}
}

func TestEpochLogErrors(t *testing.T) {
	raw := unhex(capturedEpochLog1)
	var e EpochLog
	if err := e.Unmarshal(raw, 0); err == nil {
		t.Error("a log with 1 node decoded with room for 0")
	}
	if err := e.Unmarshal(raw[:EpochLogHeaderSize+NodeSize-1], 1); err == nil {
		t.Error("a truncated node decoded")
	}
	if err := e.Unmarshal(raw[:EpochLogHeaderSize-1], 0); err == nil {
		t.Error("a truncated header decoded")
	}
	// nr_nodes near 2^32 with room for everything: must fail cleanly.
	huge := append([]byte(nil), raw...)
	le.PutUint32(huge[20:], math.MaxUint32)
	if err := e.Unmarshal(huge, math.MaxInt); err == nil {
		t.Error("nr_nodes 0xffffffff decoded from 128 bytes")
	}
	// Extra room is fine: STAT_CLUSTER records are 48 + N*80 bytes long.
	if err := e.Unmarshal(append(raw, make([]byte, 5*NodeSize)...), 6); err != nil || len(e.Nodes) != 1 {
		t.Errorf("Unmarshal with room for 6: %d nodes, %v", len(e.Nodes), err)
	}
}

func TestEpochLogOffsets(t *testing.T) {
	e := EpochLog{Ctime: 0x1122334455667788, Time: 0x0102030405060708, Epoch: 0xa0b0c0d0,
		DisableRecovery: 1, NrCopies: 3, CopyPolicy: 0x42, Flags: 0x3f, DrvName: "tree"}
	want := image(EpochLogHeaderSize, at{0, 8, 0x1122334455667788}, at{8, 8, 0x0102030405060708},
		at{16, 4, 0xa0b0c0d0}, at{20, 4, 7}, at{24, 1, 1}, at{25, 1, 3}, at{26, 1, 0x42}, at{30, 2, 0x3f})
	copy(want[32:], "tree")
	got := bytes.Repeat([]byte{0xee}, EpochLogHeaderSize)
	e.MarshalHeader(got, 7)
	if !bytes.Equal(got, want) {
		t.Errorf("MarshalHeader\n got %x\nwant %x", got, want)
	}
	// A 16-byte driver name fills the field without a NUL.
	e.DrvName = strings.Repeat("d", 16)
	e.MarshalHeader(got, 0)
	var d EpochLog
	if err := d.Unmarshal(got, 0); err != nil || d.DrvName != e.DrvName {
		t.Errorf("16-byte drv_name decoded as %q, %v", d.DrvName, err)
	}
}

func TestCaptureClusterInfo(t *testing.T) {
	raw := capturedClusterInfo(t)
	var c ClusterInfo
	if err := c.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	want := ClusterInfo{
		ProtoVer: SheepProtoVer, Epoch: 1, Ctime: 0x6b07d5903a178948, Flags: ClusterFlagAutoVnodes,
		NrCopies: 1, Status: StatusOK, BlockSizeShift: 22, DefaultStore: "plain",
		Nodes: []Node{capturedSheep},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Unmarshal = %+v, want %+v", c, want)
	}
	out := c.Marshal()
	wantOut := append([]byte(nil), raw...)
	clear(wantOut[48 : 48+24]) // the node's rb
	if !bytes.Equal(out, wantOut) {
		t.Errorf("Marshal differs at byte %d", firstDiff(out, wantOut))
	}
}

func TestClusterInfoRoundTrip(t *testing.T) {
	full := make([]Node, MaxNodes)
	for i := range full {
		full[i] = Node{NodeID: NodeID{Addr: [16]byte{12: 10, 13: byte(i >> 8), 14: byte(i), 15: 1}, Port: uint16(7000 + i)},
			NrVnodes: uint16(i), Zone: uint32(i), Space: uint64(i) << 30}
	}
	for _, c := range []ClusterInfo{
		{},
		{ProtoVer: 0x0a, DisableRecovery: 1, Epoch: 0xfffffffe, Ctime: 1 << 63, Flags: 0x3f, NrCopies: 31,
			CopyPolicy: 0x42, Status: StatusShutdown, BlockSizeShift: 31, DefaultStore: "tree", Nodes: full[:3]},
		{Status: StatusKilled, DefaultStore: strings.Repeat("s", 16), Nodes: full},
	} {
		b := c.Marshal()
		if len(b) != ClusterInfoSize {
			t.Fatalf("Marshal: %d bytes", len(b))
		}
		if got := int(int16(le.Uint16(b[2:]))); got != len(c.Nodes) {
			t.Errorf("nr_nodes @2 = %d, want %d", got, len(c.Nodes))
		}
		var d ClusterInfo
		if err := d.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		if c.Nodes == nil {
			c.Nodes = []Node{}
		}
		if !reflect.DeepEqual(d, c) {
			t.Errorf("round trip of %d nodes differs", len(c.Nodes))
		}
	}
	// Field offsets (§5.3).
	c := ClusterInfo{ProtoVer: 0x0a, DisableRecovery: 1, Epoch: 0x01020304, Ctime: 0x1122334455667788, Flags: 0x3f,
		NrCopies: 3, CopyPolicy: 0x42, Status: StatusWait, BlockSizeShift: 22, DefaultStore: "plain"}
	want := image(48, at{0, 1, 0x0a}, at{1, 1, 1}, at{4, 4, 0x01020304}, at{8, 8, 0x1122334455667788},
		at{16, 2, 0x3f}, at{18, 1, 3}, at{19, 1, 0x42}, at{20, 1, 2}, at{21, 1, 22})
	copy(want[25:], "plain")
	if got := c.Marshal()[:48]; !bytes.Equal(got, want) {
		t.Errorf("Marshal head\n got %x\nwant %x", got, want)
	}
}

func TestClusterInfoErrors(t *testing.T) {
	raw := capturedClusterInfo(t)
	var c ClusterInfo
	if err := c.Unmarshal(raw[:47]); err == nil {
		t.Error("47 bytes decoded")
	}
	// The node list may be cut after nr_nodes entries ...
	if err := c.Unmarshal(raw[:48+NodeSize]); err != nil {
		t.Errorf("cluster_info cut after its node: %v", err)
	}
	// ... but not before.
	if err := c.Unmarshal(raw[:48+NodeSize-1]); err == nil {
		t.Error("truncated node decoded")
	}
	for _, n := range []int16{-1, math.MinInt16, MaxNodes + 1, math.MaxInt16} {
		b := append([]byte(nil), raw...)
		le.PutUint16(b[2:], uint16(n))
		if err := c.Unmarshal(b); err == nil {
			t.Errorf("nr_nodes %d decoded", n)
		}
	}
}

func TestVdiState(t *testing.T) {
	v := VdiState{
		Vid: 0x15d167, NrCopies: 3, Snapshot: true, Deleted: true, CopyPolicy: 0x42, BlockSizeShift: 22,
		ParentVid: 0x15d166, LockState: LockStateLocked,
		LockOwner: NodeID{Addr: [16]byte{12: 127, 15: 1}, Port: 7000, IOAddr: [16]byte{12: 10, 15: 1}, IOPort: 7001},
	}
	want := image(VdiStateSize, at{0, 4, 0x15d167}, at{4, 1, 3}, at{5, 1, 1}, at{6, 1, 1}, at{7, 1, 0x42}, at{8, 1, 22},
		at{12, 4, 0x15d166}, at{16, 4, 2}, at{32, 1, 127}, at{35, 1, 1}, at{36, 2, 7000},
		at{50, 1, 10}, at{53, 1, 1}, at{54, 2, 7001})
	got := bytes.Repeat([]byte{0xee}, VdiStateSize)
	v.Marshal(got)
	if !bytes.Equal(got, want) {
		t.Errorf("Marshal differs at byte %d", firstDiff(got, want))
	}
	var d VdiState
	if err := d.Unmarshal(want); err != nil || d != v {
		t.Errorf("Unmarshal = %+v, %v", d, err)
	}
	// Any nonzero byte is true; the shared-lock participants (@60 on) are
	// not kept.
	dirty := append([]byte(nil), want...)
	dirty[5], dirty[6] = 0x80, 0x02
	for i := 60; i < VdiStateSize; i++ {
		dirty[i] = byte(i)
	}
	if err := d.Unmarshal(dirty); err != nil || d != v {
		t.Errorf("Unmarshal of a record with participants = %+v, %v", d, err)
	}
	if err := d.Unmarshal(want[:VdiStateSize-1]); err == nil {
		t.Error("1427 bytes decoded")
	}
	if err := (&VdiState{}).Unmarshal(make([]byte, VdiStateSize)); err != nil {
		t.Error(err)
	}
}

func TestCaptureVdiAttr(t *testing.T) {
	tests := []struct {
		name string
		attr VdiAttr
		sha  string
	}{
		{"setattr", VdiAttr{Name: "Alice", Key: "owner", Value: []byte("alice")}, capturedSetattrSHA},
		{"getattr", VdiAttr{Name: "Alice", Key: "owner"}, capturedGetattrSHA},
	}
	for _, tt := range tests {
		b := tt.attr.Marshal()
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != tt.sha {
			t.Errorf("%s: Marshal has digest %x, dog sent %s", tt.name, sum, tt.sha)
		}
		var d VdiAttr
		if err := d.Unmarshal(b); err != nil || !reflect.DeepEqual(d, tt.attr) {
			t.Errorf("%s: Unmarshal = %+v, %v", tt.name, d, err)
		}
	}
}

func TestVdiAttr(t *testing.T) {
	a := VdiAttr{Name: "vol", Tag: "snap", Ctime: 0x6b07d5903a178948, SnapID: 7, Key: "k", Value: []byte{0, 1, 2, 0}}
	b := a.Marshal()
	want := image(AttrSize, at{512, 8, 0x6b07d5903a178948}, at{520, 4, 7}, at{524, 4, 4}, at{785, 1, 1}, at{786, 1, 2})
	copy(want[0:], "vol")
	copy(want[256:], "snap")
	copy(want[528:], "k")
	if !bytes.Equal(b, want) {
		t.Errorf("Marshal differs at byte %d", firstDiff(b, want))
	}
	var d VdiAttr
	if err := d.Unmarshal(b); err != nil || !reflect.DeepEqual(d, a) {
		t.Errorf("Unmarshal = %+v, %v", d, err)
	}
	// The largest value fills the record to its last byte.
	big := VdiAttr{Name: "v", Key: "k", Value: bytes.Repeat([]byte{0xab}, AttrValueLen)}
	b = big.Marshal()
	if b[AttrSize-1] != 0xab {
		t.Error("a 65536-byte value does not end at the record's end")
	}
	if err := d.Unmarshal(b); err != nil || !reflect.DeepEqual(d, big) {
		t.Errorf("Unmarshal of the largest value: %v", err)
	}
	le.PutUint32(b[524:], AttrValueLen+1)
	if err := d.Unmarshal(b); err == nil {
		t.Error("value_len 65537 decoded")
	}
	if err := d.Unmarshal(b[:AttrSize-1]); err == nil {
		t.Error("66319 bytes decoded")
	}
}

func TestRecoveryState(t *testing.T) {
	r := RecoveryState{InRecovery: true, State: 0x01020304, NrFinished: 0x1122334455667788, NrTotal: math.MaxUint64}
	want := image(RecoveryStateSize, at{0, 1, 1}, at{4, 4, 0x01020304}, at{8, 8, 0x1122334455667788}, at{16, 8, math.MaxUint64})
	b := r.Marshal()
	if !bytes.Equal(b, want) {
		t.Errorf("Marshal\n got %x\nwant %x", b, want)
	}
	var d RecoveryState
	if err := d.Unmarshal(b); err != nil || d != r {
		t.Errorf("Unmarshal = %+v, %v", d, err)
	}
	if err := d.Unmarshal(b[:RecoveryStateSize-1]); err == nil {
		t.Error("23 bytes decoded")
	}
	if err := d.Unmarshal(make([]byte, RecoveryStateSize)); err != nil || d != (RecoveryState{}) {
		t.Errorf("zero record = %+v, %v", d, err)
	}
}

func TestVdiName(t *testing.T) {
	// The GET_VDI_INFO payloads in dog-wire.log carry name[256]+tag[256].
	var seen int
	for _, m := range loadCapture(t) {
		if m.Dir != "REQ" || (m.Op != OpGetVdiInfo && m.Op != OpNewVdi && m.Op != OpDelVdi) || m.Data == nil {
			continue
		}
		seen++
		name, tag, err := ParseVdiName(m.Data)
		if err != nil {
			t.Fatalf("line %d: %v", m.Line, err)
		}
		if got := VdiName(name, tag, len(m.Data) == MaxVdiLen+MaxVdiTagLen); !bytes.Equal(got, m.Data) {
			t.Errorf("line %d: VdiName(%q, %q) differs from the capture", m.Line, name, tag)
		}
	}
	if seen < 10 {
		t.Fatalf("only %d name payloads in the capture", seen)
	}

	tests := []struct {
		name, tag         string
		withTag           bool
		wantName, wantTag string
	}{
		{"Alice", "", false, "Alice", ""},
		{"Alice", "s1", true, "Alice", "s1"},
		{"Alice", "ignored", false, "Alice", ""},
		{"", "", true, "", ""},
		{strings.Repeat("n", 255), strings.Repeat("t", 255), true, strings.Repeat("n", 255), strings.Repeat("t", 255)},
		// VdiName keeps a terminating NUL, like dog's pstrcpy.
		{strings.Repeat("n", 256), strings.Repeat("t", 300), true, strings.Repeat("n", 255), strings.Repeat("t", 255)},
	}
	for _, tt := range tests {
		b := VdiName(tt.name, tt.tag, tt.withTag)
		wantLen := MaxVdiLen
		if tt.withTag {
			wantLen += MaxVdiTagLen
		}
		if len(b) != wantLen {
			t.Errorf("VdiName(%q, %q, %v): %d bytes", tt.name, tt.tag, tt.withTag, len(b))
		}
		name, tag, err := ParseVdiName(b)
		if err != nil || name != tt.wantName || tag != tt.wantTag {
			t.Errorf("ParseVdiName(VdiName(%.10q, %.10q)) = %.10q, %.10q, %v", tt.name, tt.tag, name, tag, err)
		}
	}
	// A name that fills its field is read whole.
	if name, _, err := ParseVdiName(bytes.Repeat([]byte{'x'}, MaxVdiLen)); err != nil || len(name) != MaxVdiLen {
		t.Errorf("256-byte name: %d bytes, %v", len(name), err)
	}
}

func TestParseVdiNameLength(t *testing.T) {
	for _, n := range []int{0, 1, 255, 257, 511, 513, 1024} {
		_, _, err := ParseVdiName(make([]byte, n))
		if err == nil {
			t.Errorf("ParseVdiName(%d bytes) succeeded", n)
			continue
		}
		if !errors.Is(err, ResInvalidParms) || ResultOf(err) != ResInvalidParms {
			t.Errorf("ParseVdiName(%d bytes) = %v, want an error wrapping ResInvalidParms", n, err)
		}
	}
}
