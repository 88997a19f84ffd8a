package proto

import (
	"net/netip"
	"testing"
)

// TestRepairRequest: REPAIR_REPLICA names the source node in the forw
// fields, and the node read back is the one named, an IPv4-mapped address
// in Sheepdog's form.
func TestRepairRequest(t *testing.T) {
	from := NodeIDFromAddrPort(netip.MustParseAddrPort("10.0.0.7:7001"))
	r := RepairRequest(9, 0x00fd381500000001, from, FlagRepairBadChunks)
	var b [HeaderSize]byte
	r.Marshal(b[:])
	var got Request
	if err := got.Unmarshal(b[:]); err != nil {
		t.Fatal(err)
	}
	if got.Opcode != OpRepairReplica || got.ProtoVer != SheepProtoVer || got.Epoch != 9 || got.Flags != FlagRepairBadChunks {
		t.Fatalf("header %+v", got)
	}
	f := got.Forw()
	if f.Oid != 0x00fd381500000001 || f.Node() != from || f.Node().String() != "10.0.0.7:7001" {
		t.Fatalf("forw %+v names %v", f, f.Node())
	}
	mapped := ForwArgs{Addr: netip.MustParseAddr("::ffff:10.0.0.7").As16(), Port: 7001}
	if mapped.Node() != from {
		t.Fatalf("mapped address gives %v (%x), want %v", mapped.Node(), mapped.Node().Addr, from)
	}
}

// TestProposeIndex: the log index of an OpClusterPropose reply sits at
// rsp @24, little-endian.
func TestProposeIndex(t *testing.T) {
	var r Response
	r.SetProposeIndex(0x0102030405060708)
	var b [HeaderSize]byte
	r.Marshal(b[:])
	if b[24] != 0x08 || b[31] != 0x01 {
		t.Fatalf("index bytes % x", b[24:32])
	}
	var got Response
	if err := got.Unmarshal(b[:]); err != nil || got.ProposeIndex() != 0x0102030405060708 {
		t.Fatalf("ProposeIndex = %x, %v", got.ProposeIndex(), err)
	}
}
