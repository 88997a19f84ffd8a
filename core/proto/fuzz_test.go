package proto

// Fuzz targets for every decoder of the package. Each one must never panic,
// must fail exactly on the inputs it documents as invalid, and must be
// stable: decode → encode → decode gives the same value, and the encoding
// keeps every byte the decoder reads. Seeds are the bytes of dog-wire.log.
//
// Run one with: go test ./core/proto -run='^$' -fuzz='^FuzzRequestUnmarshal$' -fuzztime=30s

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

func addCaptured(f *testing.F, dir string, add func(m *wireMsg)) {
	for _, m := range loadCapture(f) {
		if m.Dir == dir {
			add(m)
		}
	}
}

func FuzzRequestUnmarshal(f *testing.F) {
	addCaptured(f, "REQ", func(m *wireMsg) { f.Add(m.Hdr) })
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		err := r.Unmarshal(b)
		if len(b) < HeaderSize {
			if err != ErrShortHeader {
				t.Fatalf("%d bytes: err %v, want ErrShortHeader", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var out [HeaderSize]byte
		r.Marshal(out[:])
		if !bytes.Equal(out[:], b[:HeaderSize]) {
			t.Fatalf("re-encoded\n got %x\nwant %x", out, b[:HeaderSize])
		}
		var d Request
		if err := d.Unmarshal(out[:]); err != nil || d != r {
			t.Fatalf("second decode %+v, %v; first %+v", d, err, r)
		}
		// Every view is stable under decode → encode → decode, and an
		// encoder touches nothing outside the union.
		views := []struct {
			name string
			same func(r, s *Request) bool
		}{
			{"obj", func(r, s *Request) bool { s.SetObj(r.Obj()); return s.Obj() == r.Obj() }},
			{"vdi", func(r, s *Request) bool { s.SetVdi(r.Vdi()); return s.Vdi() == r.Vdi() }},
			{"cluster", func(r, s *Request) bool { s.SetCluster(r.Cluster()); return s.Cluster() == r.Cluster() }},
			{"vdi_state", func(r, s *Request) bool { s.SetVdiState(r.VdiState()); return s.VdiState() == r.VdiState() }},
			{"ref", func(r, s *Request) bool { s.SetRef(r.Ref()); return s.Ref() == r.Ref() }},
			{"forw", func(r, s *Request) bool { s.SetForw(r.Forw()); return s.Forw() == r.Forw() }},
		}
		for _, v := range views {
			s := Request{ProtoVer: r.ProtoVer, Opcode: r.Opcode, Flags: r.Flags, Epoch: r.Epoch, ID: r.ID, DataLength: r.DataLength}
			if !v.same(&r, &s) {
				t.Fatalf("%s view is not stable for %x", v.name, b[:HeaderSize])
			}
			s.Arg = r.Arg
			if s != r {
				t.Fatalf("%s view: the fixed fields changed", v.name)
			}
		}
	})
}

func FuzzResponseUnmarshal(f *testing.F) {
	addCaptured(f, "RSP", func(m *wireMsg) { f.Add(m.Hdr) })
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Response
		err := r.Unmarshal(b)
		if len(b) < HeaderSize {
			if err != ErrShortHeader {
				t.Fatalf("%d bytes: err %v, want ErrShortHeader", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var out [HeaderSize]byte
		r.Marshal(out[:])
		if !bytes.Equal(out[:], b[:HeaderSize]) {
			t.Fatalf("re-encoded\n got %x\nwant %x", out, b[:HeaderSize])
		}
		var d Response
		if err := d.Unmarshal(out[:]); err != nil || d != r {
			t.Fatalf("second decode %+v, %v; first %+v", d, err, r)
		}
		views := []struct {
			name string
			same func(r, s *Response) bool
		}{
			{"vdi", func(r, s *Response) bool { s.SetVdi(r.Vdi()); return s.Vdi() == r.Vdi() }},
			{"node", func(r, s *Response) bool { s.SetNode(r.Node()); return s.Node() == r.Node() }},
			{"hash", func(r, s *Response) bool { s.SetHash(r.Hash()); return s.Hash() == r.Hash() }},
			{"cluster_default", func(r, s *Response) bool {
				s.SetClusterDefault(r.ClusterDefault())
				return s.ClusterDefault() == r.ClusterDefault()
			}},
		}
		for _, v := range views {
			s := Response{ProtoVer: r.ProtoVer, Opcode: r.Opcode, Flags: r.Flags, Epoch: r.Epoch, ID: r.ID,
				DataLength: r.DataLength, Result: r.Result}
			if !v.same(&r, &s) {
				t.Fatalf("%s view is not stable for %x", v.name, b[:HeaderSize])
			}
			s.Arg = r.Arg
			if s != r {
				t.Fatalf("%s view: the fixed fields changed", v.name)
			}
		}
		if r.Result.String() == "" || ResultOf(r.Result) != r.Result {
			t.Fatalf("result %#x: %q, ResultOf %#x", uint32(r.Result), r.Result.String(), uint32(ResultOf(r.Result)))
		}
	})
}

// headerSample is sampleInode without its tables.
func headerSample() []byte {
	ino := Inode{Name: "Alice", Tag: "snap-1", CreateTime: 0x6b07d5903a178948, SnapCtime: 1, VMClockNsec: 2,
		VdiSize: 64 << 20, VMStateSize: 3, CopyPolicy: 0x42, StorePolicy: 1, NrCopies: 3, BlockSizeShift: 22,
		SnapID: 2, VdiID: 0x15d168, ParentVdiID: 0x15d167, BtreeCounter: 5}
	b := make([]byte, InodeHeaderSize)
	ino.MarshalHeader(b)
	return b
}

func FuzzInodeUnmarshalHeader(f *testing.F) {
	f.Add(headerSample())
	f.Add(headerSample()[:572])
	f.Add(headerSample()[:571])
	addCaptured(f, "RSP", func(m *wireMsg) {
		if m.Op == OpReadObj && m.DataHead != nil {
			f.Add(append(append([]byte(nil), m.DataHead...), make([]byte, 572-len(m.DataHead))...))
		}
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ino Inode
		err := ino.UnmarshalHeader(b)
		if (err != nil) != (len(b) < 572) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := make([]byte, InodeHeaderSize)
		ino.MarshalHeader(out)
		// The numeric fields survive byte for byte.
		if !bytes.Equal(out[512:572], b[512:572]) {
			t.Fatalf("fields 512..572 re-encoded as %x, were %x", out[512:572], b[512:572])
		}
		var d Inode
		if err := d.UnmarshalHeader(out); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d, ino) {
			t.Fatalf("second decode %+v, first %+v", d, ino)
		}
	})
}

func FuzzInodeUnmarshalRange(f *testing.F) {
	for _, m := range loadCapture(f) {
		var r Request
		if err := r.Unmarshal(m.Hdr); err != nil || m.Dir != "REQ" || m.Data == nil || !IsVdiObj(r.Obj().Oid) {
			continue
		}
		f.Add(int64(r.Obj().Offset), m.Data)
	}
	f.Add(int64(DataVdiIDOffset), unhex("26fa5a0026fa5a00")) // READ_OBJ reply, dog vdi list
	hdr := headerSample()
	for _, r := range inodeRanges {
		if r.off+r.n <= InodeHeaderSize {
			f.Add(r.off, hdr[r.off:r.off+r.n])
		} else if r.n <= 64 {
			f.Add(r.off, bytes.Repeat([]byte{0xa5}, int(r.n)))
		}
	}
	f.Add(int64(-1), []byte{1})
	f.Add(int64(InodeSize), []byte{1})
	f.Add(int64(InodeSize), []byte{})
	f.Add(int64(math.MaxInt64), []byte{1, 2})
	f.Fuzz(func(t *testing.T, off int64, b []byte) {
		checkInodeRange(t, off, b)
		// Most fuzzed offsets are out of range; fold them in too.
		if len(b) <= InodeSize {
			span := uint64(InodeSize - len(b) + 1)
			checkInodeRange(t, int64(uint64(off)%span), b)
		}
	})
}

func checkInodeRange(t *testing.T, off int64, b []byte) {
	inRange := off >= 0 && off <= InodeSize && int64(len(b)) <= InodeSize-off
	var ino Inode
	err := ino.UnmarshalRange(off, b)
	if (err != nil) == inRange {
		t.Fatalf("UnmarshalRange(%d, %d bytes): err %v, in range %v", off, len(b), err, inRange)
	}
	out := make([]byte, len(b))
	if err := ino.MarshalRange(off, out); (err != nil) == inRange {
		t.Fatalf("MarshalRange(%d, %d bytes): err %v, in range %v", off, len(b), err, inRange)
	}
	if !inRange {
		if !reflect.DeepEqual(ino, Inode{}) {
			t.Fatalf("failed UnmarshalRange(%d, %d bytes) changed the inode", off, len(b))
		}
		return
	}
	end := off + int64(len(b))
	if (ino.DataVdiID != nil) != (max(off, DataVdiIDOffset) < min(end, GrefOffset)) ||
		(ino.Gref != nil) != (max(off, GrefOffset) < end) {
		t.Fatalf("range [%d,%d): data_vdi_id allocated %v, gref allocated %v", off, end, ino.DataVdiID != nil, ino.Gref != nil)
	}
	// Bytes of the numeric header fields and of the tables come back as
	// written; strings are cut at their NUL and the unused area reads 0.
	for p := off; p < end; p++ {
		if (p >= 512 && p < 572 || p >= InodeHeaderSize) && out[p-off] != b[p-off] {
			t.Fatalf("range [%d,%d): byte %d re-encoded as %#x, was %#x", off, end, p, out[p-off], b[p-off])
		}
		if p >= 572 && p < InodeHeaderSize && out[p-off] != 0 {
			t.Fatalf("unused header byte %d encodes as %#x", p, out[p-off])
		}
	}
	// Applying the encoding again changes nothing.
	again := ino
	if err := again.UnmarshalRange(off, out); err != nil {
		t.Fatal(err)
	}
	out2 := make([]byte, len(b))
	if err := again.MarshalRange(off, out2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, out2) {
		t.Fatalf("range [%d,%d) not stable", off, end)
	}
}

func FuzzNodeUnmarshal(f *testing.F) {
	f.Add(unhex(capturedNode))
	f.Add(unhex(capturedEpochLog1)[EpochLogHeaderSize:])
	f.Add(make([]byte, NodeSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n Node
		err := n.Unmarshal(b)
		if (err != nil) != (len(b) < NodeSize) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := make([]byte, NodeSize)
		n.Marshal(out)
		// Everything but rb (0..23) and the padding (60..63, 66..67) is kept.
		want := append([]byte(nil), b[:NodeSize]...)
		clear(want[0:24])
		clear(want[60:64])
		clear(want[66:68])
		if !bytes.Equal(out, want) {
			t.Fatalf("re-encoded\n got %x\nwant %x", out, want)
		}
		var d Node
		if err := d.Unmarshal(out); err != nil || d != n {
			t.Fatalf("second decode %+v, %v; first %+v", d, err, n)
		}
		// The text form must not panic for any address.
		if n.String() == "" || n.Compare(d.NodeID) != 0 {
			t.Fatalf("String %q, Compare with itself %d", n.String(), n.Compare(d.NodeID))
		}
	})
}

func FuzzUnmarshalNodes(f *testing.F) {
	node := unhex(capturedNode)
	f.Add(node, 1)
	f.Add(node, 0)
	f.Add(node, 2)
	f.Add(node, -1)
	f.Add(node, 1<<61) // n*80 wraps to 0
	f.Add(MarshalNodes([]Node{capturedSheep, capturedSheep, {}}), 3)
	f.Add([]byte(nil), 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		nodes, err := UnmarshalNodes(b, n)
		valid := n >= 0 && n <= len(b)/NodeSize
		if (err == nil) != valid {
			t.Fatalf("%d bytes, n = %d: err %v", len(b), n, err)
		}
		if err != nil {
			return
		}
		if len(nodes) != n {
			t.Fatalf("%d nodes, want %d", len(nodes), n)
		}
		again, err := UnmarshalNodes(MarshalNodes(nodes), n)
		if err != nil || !reflect.DeepEqual(again, nodes) {
			t.Fatalf("second decode differs: %v", err)
		}
	})
}

func FuzzEpochLogUnmarshal(f *testing.F) {
	f.Add(unhex(capturedEpochLog0), 0)
	f.Add(unhex(capturedEpochLog1), 1)
	f.Add(unhex(capturedEpochLog1), 0)
	f.Add(unhex(capturedEpochLog1), MaxNodes)
	f.Add(unhex(capturedEpochLog1)[:EpochLogHeaderSize+1], 1)
	f.Fuzz(func(t *testing.T, b []byte, maxNodes int) {
		var e EpochLog
		if err := e.Unmarshal(b, maxNodes); err != nil {
			return
		}
		if len(b) < EpochLogHeaderSize || len(e.Nodes) > maxNodes || len(e.Nodes) != int(le.Uint32(b[20:])) {
			t.Fatalf("decoded %d nodes from %d bytes with room for %d", len(e.Nodes), len(b), maxNodes)
		}
		out := make([]byte, EpochLogHeaderSize)
		e.MarshalHeader(out, uint32(len(e.Nodes)))
		out = append(out, MarshalNodes(e.Nodes)...)
		// The header keeps every byte but the padding @27..29 and what
		// follows the driver name's NUL.
		if !bytes.Equal(out[:27], b[:27]) || !bytes.Equal(out[30:32], b[30:32]) {
			t.Fatalf("header re-encoded as %x, was %x", out[:EpochLogHeaderSize], b[:EpochLogHeaderSize])
		}
		var d EpochLog
		if err := d.Unmarshal(out, len(e.Nodes)); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d, e) {
			t.Fatalf("second decode %+v, first %+v", d, e)
		}
	})
}

func FuzzClusterInfoUnmarshal(f *testing.F) {
	head := unhex(capturedClusterInfoHead)[:48]
	f.Add(append(append([]byte(nil), head...), unhex(capturedNode)...)) // CLUSTER_INFO cut after nr_nodes
	f.Add(head)
	noNodes := append([]byte(nil), head...)
	noNodes[2] = 0
	f.Add(noNodes)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c ClusterInfo
		if err := c.Unmarshal(b); err != nil {
			return
		}
		if len(b) < 48 || len(c.Nodes) > MaxNodes || len(c.Nodes) != int(int16(le.Uint16(b[2:]))) {
			t.Fatalf("decoded %d nodes from %d bytes", len(c.Nodes), len(b))
		}
		out := c.Marshal()
		if len(out) != ClusterInfoSize {
			t.Fatalf("Marshal: %d bytes", len(out))
		}
		if !bytes.Equal(out[:22], b[:22]) {
			t.Fatalf("head re-encoded as %x, was %x", out[:22], b[:22])
		}
		var d ClusterInfo
		if err := d.Unmarshal(out); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d, c) {
			t.Fatalf("second decode %+v, first %+v", d, c)
		}
	})
}

func FuzzVdiStateUnmarshal(f *testing.F) {
	v := VdiState{Vid: 0x15d167, NrCopies: 1, Snapshot: true, CopyPolicy: 0, BlockSizeShift: 22, ParentVid: 0x15d166,
		LockState: LockStateLocked, LockOwner: capturedSheep.NodeID}
	b := make([]byte, VdiStateSize)
	v.Marshal(b)
	f.Add(b)
	f.Add(make([]byte, VdiStateSize))
	f.Add(b[:VdiStateSize-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		var v VdiState
		err := v.Unmarshal(b)
		if (err != nil) != (len(b) < VdiStateSize) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := make([]byte, VdiStateSize)
		v.Marshal(out)
		if !bytes.Equal(out[0:5], b[0:5]) || !bytes.Equal(out[7:9], b[7:9]) || !bytes.Equal(out[12:56], b[12:56]) {
			t.Fatalf("re-encoded %x, was %x", out[:60], b[:60])
		}
		var d VdiState
		if err := d.Unmarshal(out); err != nil || d != v {
			t.Fatalf("second decode %+v, %v; first %+v", d, err, v)
		}
	})
}

func FuzzVdiAttrUnmarshal(f *testing.F) {
	f.Add((&VdiAttr{Name: "Alice", Key: "owner", Value: []byte("alice")}).Marshal()) // dog vdi setattr, byte-exact
	f.Add((&VdiAttr{Name: "Alice", Key: "owner"}).Marshal())                         // dog vdi getattr
	f.Add(make([]byte, AttrSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a VdiAttr
		err := a.Unmarshal(b)
		valid := len(b) >= AttrSize && le.Uint32(b[524:]) <= AttrValueLen
		if (err == nil) != valid {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := a.Marshal()
		n := le.Uint32(b[524:])
		if !bytes.Equal(out[512:528], b[512:528]) || !bytes.Equal(out[784:784+n], b[784:784+n]) {
			t.Fatal("ctime, snap_id, value_len or value changed on re-encoding")
		}
		var d VdiAttr
		if err := d.Unmarshal(out); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d, a) {
			t.Fatalf("second decode %+v, first %+v", d, a)
		}
	})
}

func FuzzRecoveryStateUnmarshal(f *testing.F) {
	f.Add((&RecoveryState{InRecovery: true, State: 2, NrFinished: 10, NrTotal: 100}).Marshal())
	f.Add(make([]byte, RecoveryStateSize))
	f.Add(make([]byte, RecoveryStateSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r RecoveryState
		err := r.Unmarshal(b)
		if (err != nil) != (len(b) < RecoveryStateSize) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := r.Marshal()
		if (out[0] != 0) != (b[0] != 0) || !bytes.Equal(out[4:], b[4:RecoveryStateSize]) {
			t.Fatalf("re-encoded %x, was %x", out, b[:RecoveryStateSize])
		}
		var d RecoveryState
		if err := d.Unmarshal(out); err != nil || d != r {
			t.Fatalf("second decode %+v, %v; first %+v", d, err, r)
		}
	})
}

func FuzzParseVdiName(f *testing.F) {
	addCaptured(f, "REQ", func(m *wireMsg) {
		if (m.Op == OpGetVdiInfo || m.Op == OpNewVdi || m.Op == OpDelVdi) && m.Data != nil {
			f.Add(m.Data)
		}
	})
	f.Add(bytes.Repeat([]byte{'x'}, MaxVdiLen))
	f.Add(make([]byte, MaxVdiLen+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, tag, err := ParseVdiName(b)
		withTag := len(b) == MaxVdiLen+MaxVdiTagLen
		if len(b) != MaxVdiLen && !withTag {
			if err == nil || !errors.Is(err, ResInvalidParms) {
				t.Fatalf("%d bytes: err %v, want one wrapping ResInvalidParms", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(name) > MaxVdiLen || len(tag) > MaxVdiTagLen || (!withTag && tag != "") ||
			bytes.IndexByte([]byte(name), 0) >= 0 || bytes.IndexByte([]byte(tag), 0) >= 0 {
			t.Fatalf("decoded name %q tag %q", name, tag)
		}
		// VdiName keeps a NUL at the end of each field, so a name that
		// fills all 256 bytes comes back cut to 255.
		enc := VdiName(name, tag, withTag)
		if len(enc) != len(b) {
			t.Fatalf("VdiName: %d bytes, want %d", len(enc), len(b))
		}
		name2, tag2, err := ParseVdiName(enc)
		if err != nil || name2 != name[:min(len(name), MaxVdiLen-1)] || tag2 != tag[:min(len(tag), MaxVdiTagLen-1)] {
			t.Fatalf("second decode %q %q %v; first %q %q", name2, tag2, err, name, tag)
		}
		if !bytes.Equal(VdiName(name2, tag2, withTag), enc) {
			t.Fatal("VdiName is not stable")
		}
	})
}
