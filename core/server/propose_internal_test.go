package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestDecodeProposal(t *testing.T) {
	node := proto.Node{NodeID: proto.NodeID{Addr: [16]byte{15: 1}, Port: 7000}, NrVnodes: 128}
	enc := func(e cluster.Entry) string {
		b, _ := json.Marshal(e)
		return string(b)
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"format", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 3, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), true},
		{"epoch", enc(cluster.Entry{Kind: cluster.KindEpoch, Time: 5, Nodes: []proto.Node{node}}), true},
		{"add vdi", enc(cluster.Entry{Kind: cluster.KindAddVdi, Vid: 0x123, Copies: 3}), true},
		{"lock", enc(cluster.Entry{Kind: cluster.KindLock, Vid: 0x123, Token: 9}), true},
		{"shutdown", enc(cluster.Entry{Kind: cluster.KindShutdown, Time: 5}), true},
		{"recovery", enc(cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: true}), true},
		{"format 4:2", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 6, CopyPolicy: 0x22, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), true},
		{"add vdi 2:1", enc(cluster.Entry{Kind: cluster.KindAddVdi, Vid: 0x123, Copies: 3, CopyPolicy: 0x11}), true},
		{"identity", enc(cluster.Entry{Kind: cluster.KindIdentity, ClusterID: "0123abcd"}), true},
		{"attr claim", enc(cluster.Entry{Kind: cluster.KindAttrClaim, Oid: proto.VdiAttrBit | 0x123<<32 | 7, AttrID: "Alice\x00\x00key"}), true},
		{"format 6:1", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 7, CopyPolicy: 0x31, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), false},
		{"format 4:2 with 3 copies", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 3, CopyPolicy: 0x22, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), false},
		{"empty identity", enc(cluster.Entry{Kind: cluster.KindIdentity}), false},
		{"attr claim of a data object", enc(cluster.Entry{Kind: cluster.KindAttrClaim, Oid: 0x123 << 32, AttrID: "x"}), false},

		{"garbage", "\x8f\x00garbage", false},
		{"empty object", "{}", false},
		{"unknown kind", `{"Kind":99}`, false},
		{"unknown field", `{"Kind":2,"Evil":1}`, false},
		{"trailing data", enc(cluster.Entry{Kind: cluster.KindShutdown}) + " {}", false},
		{"epoch without nodes", enc(cluster.Entry{Kind: cluster.KindEpoch, Time: 5}), false},
		{"epoch with a node twice", enc(cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{node, node}}), false},
		{"epoch with a zero node", enc(cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{{}}}), false},
		{"format with 0 copies", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), false},
		{"format with 40 copies", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 40, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{node}}), false},
		{"format with store x", enc(cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 1, BlockSizeShift: 22, Store: "x", Nodes: []proto.Node{node}}), false},
		{"add vid 0", enc(cluster.Entry{Kind: cluster.KindAddVdi}), false},
		{"add vid 2^24", enc(cluster.Entry{Kind: cluster.KindAddVdi, Vid: 1 << 24}), false},
		{"del vid 0", enc(cluster.Entry{Kind: cluster.KindDelVdi}), false},
		{"lock without token", enc(cluster.Entry{Kind: cluster.KindLock, Vid: 5}), false},
		{"too big", `{"Kind":2,"Store":"` + strings.Repeat("a", maxProposal) + `"}`, false},
	} {
		_, err := decodeProposal([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func FuzzDecodeProposal(f *testing.F) {
	f.Add([]byte(`{"Kind":7,"Nodes":[{"Addr":[0,0,0,0,0,0,0,0,0,0,0,0,127,0,0,1],"Port":7000}]}`))
	f.Add([]byte(`{"Kind":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeProposal(b)
		if err != nil {
			return
		}
		// What passes re-encodes to an entry that passes again.
		again, _ := json.Marshal(e)
		if _, err := decodeProposal(again); err != nil {
			t.Fatalf("%s passed, its re-encoding %s did not: %v", b, again, err)
		}
	})
}
