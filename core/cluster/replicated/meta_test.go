package replicated

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func sampleMeta() meta {
	n := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7000")), NrVnodes: 128, Zone: 3, Space: 1 << 40}
	return meta{Node: n, RaftPort: 27000, Identity: Identity{ClusterID: "0123456789abcdef", Ctime: 0x5f00000000000001, Generation: 2}}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []meta{sampleMeta(), {Node: sampleMeta().Node, RaftPort: 1}} {
		got, err := decodeMeta(m.encode())
		if err != nil || got != m {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", m, got, err)
		}
	}
	// The layout of sheeps before identities: node | ctime | raft port.
	m := sampleMeta()
	old := make([]byte, metaV0Size)
	m.Node.Marshal(old)
	old[proto.NodeSize] = 0x01
	old[proto.NodeSize+8] = 0x70
	got, err := decodeMeta(old)
	if err != nil || got.Ctime != 1 || got.RaftPort != 0x70 || got.ClusterID != "" || got.Node != m.Node {
		t.Fatalf("version 0: %+v, %v", got, err)
	}
}

func TestMetaRejects(t *testing.T) {
	good := sampleMeta().encode()
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short node":   good[:proto.NodeSize-1],
		"between":      good[:metaV0Size+1],
		"bad version":  append(append([]byte{}, good[:proto.NodeSize]...), append([]byte{9}, good[proto.NodeSize+1:]...)...),
		"id too long":  append(bytes.Clone(good), 'x'),
		"id truncated": good[:len(good)-1],
	} {
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestIdentityConflicts(t *testing.T) {
	a := Identity{ClusterID: "a", Ctime: 1}
	for _, tc := range []struct {
		b        Identity
		conflict bool
	}{
		{Identity{}, false},                         // a fresh node
		{Identity{ClusterID: "a"}, false},           // not formatted yet here
		{Identity{Ctime: 1}, false},                 // a restarted node of an older version
		{Identity{ClusterID: "b"}, true},            // bootstrapped on its own
		{Identity{ClusterID: "a", Ctime: 2}, false}, // re-formatted: the new ctime is on its way
		{Identity{Ctime: 2}, true},                  // another cluster, id unknown
		{Identity{ClusterID: "a", Ctime: 1, Generation: 7}, false},
	} {
		if got := a.Conflicts(tc.b) != ""; got != tc.conflict || got != (tc.b.Conflicts(a) != "") {
			t.Errorf("%+v vs %+v: conflict %v, want %v (both ways)", a, tc.b, got, tc.conflict)
		}
	}
}

// FuzzDecodeMeta: gossip metadata comes from any host that reaches the
// gossip port. Decoding never panics, and whatever decodes re-encodes to
// something that decodes to the same meta.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(sampleMeta().encode())
	v0 := make([]byte, metaV0Size)
	v0[metaV0Size-1] = 1
	f.Add(v0)
	f.Add(make([]byte, metaV1Fixed))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := decodeMeta(m.encode())
		if err != nil || again != m {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", m, again, err)
		}
	})
}
