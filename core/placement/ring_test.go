package placement

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func node(addr string, zone uint32, vnodes uint16) proto.Node {
	n := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort(addr)), NrVnodes: vnodes, Zone: zone}
	return n
}

// TestVnodeHashes checks the ring positions against Sheepdog's vectors
// (docs/protocol.md §4.1): node 127.0.0.1:7000's first vnode.
func TestVnodeHashes(t *testing.T) {
	r := New([]proto.Node{node("127.0.0.1:7000", 0, 1)})
	if len(r.vnodes) != 1 || r.vnodes[0].hash != 0x3af2cba6e538cdf3 {
		t.Fatalf("first vnode = %#x, want 0x3af2cba6e538cdf3", r.vnodes[0].hash)
	}
}

// refVnode is one entry of reference's vnode list.
type refVnode struct {
	h    uint64
	zone uint32
	name string
}

// referenceRing builds the vnode list as Sheepdog does, independent of
// Ring's data structures (built once per node set: the insertion sort is
// quadratic).
func referenceRing(nodes []proto.Node) ([]refVnode, int) {
	type vn = refVnode
	var ring []vn
	zones := map[uint32]bool{}
	for _, n := range nodes {
		if n.NrVnodes == 0 {
			continue
		}
		zones[n.Zone] = true
		k := n.HashKey()
		h := proto.Hash(k[:])
		for i := 0; i < int(n.NrVnodes); i++ {
			h = proto.HashNext(h)
			ring = append(ring, vn{h, n.Zone, n.NodeID.String()})
		}
	}
	// insertion sort, as a different algorithm from sort.Search
	for i := 1; i < len(ring); i++ {
		for j := i; j > 0 && ring[j].h < ring[j-1].h; j-- {
			ring[j], ring[j-1] = ring[j-1], ring[j]
		}
	}
	return ring, len(zones)
}

// reference is a direct transcription of Sheepdog's oid_to_vnodes over
// referenceRing's vnode list.
func reference(ring []refVnode, zones int, oid uint64, copies int) []string {
	type vn = refVnode
	copies = min(copies, zones)
	h := proto.HashOid(oid)
	start := 0
	for start < len(ring) && ring[start].h < h {
		start++
	}
	var out []vn
	for i := 0; len(out) < copies; i++ {
		c := ring[(start+i)%len(ring)]
		dup := false
		for _, o := range out {
			if o.zone == c.zone {
				dup = true
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	names := make([]string, len(out))
	for i, o := range out {
		names[i] = o.name
	}
	return names
}

func TestLocateMatchesReference(t *testing.T) {
	cases := []struct {
		name   string
		nodes  []proto.Node
		copies int
	}{
		{"one node", []proto.Node{node("127.0.0.1:7000", 1, 128)}, 3},
		{"three nodes", []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 2, 128), node("127.0.0.1:7002", 3, 128)}, 3},
		{"five nodes two copies", []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 2, 128), node("127.0.0.1:7002", 3, 128), node("127.0.0.1:7003", 4, 64), node("127.0.0.1:7004", 5, 200)}, 2},
		{"shared zone", []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 1, 128), node("127.0.0.1:7002", 2, 128), node("127.0.0.1:7003", 3, 128)}, 3},
		{"gateway", []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 2, 0), node("127.0.0.1:7002", 3, 128)}, 3},
	}
	for _, c := range cases {
		r := New(c.nodes)
		ring, zones := referenceRing(c.nodes)
		for i := uint64(0); i < 2000; i++ {
			oid := proto.VidToDataOid(uint32(0x15d167+i%7), uint32(i))
			if i%10 == 0 {
				oid = proto.VidToVdiOid(uint32(i))
			}
			got := r.Locate(oid, c.copies)
			want := reference(ring, zones, oid, c.copies)
			if len(got) != len(want) {
				t.Fatalf("%s: oid %x: %d copies, want %d", c.name, oid, len(got), len(want))
			}
			for k := range got {
				if got[k].NodeID.String() != want[k] {
					t.Fatalf("%s: oid %x copy %d on %s, want %s", c.name, oid, k, got[k].NodeID, want[k])
				}
			}
		}
	}
}

func TestZonesDistinct(t *testing.T) {
	nodes := []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 1, 128), node("127.0.0.1:7002", 2, 128), node("127.0.0.1:7003", 3, 128)}
	r := New(nodes)
	if r.Zones() != 3 || r.Copies(5) != 3 {
		t.Fatalf("zones %d copies %d", r.Zones(), r.Copies(5))
	}
	for i := uint32(0); i < 5000; i++ {
		seen := map[uint32]bool{}
		for _, n := range r.Locate(proto.VidToDataOid(7, i), 3) {
			if seen[n.Zone] {
				t.Fatalf("object %d has two copies in zone %d", i, n.Zone)
			}
			seen[n.Zone] = true
		}
	}
}

func TestSpread(t *testing.T) {
	var nodes []proto.Node
	for i := 0; i < 4; i++ {
		nodes = append(nodes, node(fmt.Sprintf("127.0.0.1:%d", 7000+i), uint32(i), 128))
	}
	r := New(nodes)
	count := map[string]int{}
	for i := uint32(0); i < 10000; i++ {
		count[r.Locate(proto.VidToDataOid(1, i), 1)[0].NodeID.String()]++
	}
	for n, c := range count {
		if c < 1500 || c > 3500 {
			t.Errorf("%s holds %d of 10000 primaries: ring is badly unbalanced", n, c)
		}
	}
}

func TestAutoVnodes(t *testing.T) {
	nodes := []proto.Node{{Space: 100}, {Space: 300}, {Space: 0}}
	got := AutoVnodes(nodes)
	if got[0].NrVnodes != 64 || got[1].NrVnodes != 192 || got[2].NrVnodes != 0 {
		t.Fatalf("vnodes %d %d %d", got[0].NrVnodes, got[1].NrVnodes, got[2].NrVnodes)
	}
}

// Sheepdog's test 054 expects 42/85/128/128/171/214 vnodes for stores on
// ext4 images of 1, 2, 3, 3, 4 and 5 GiB, and 37/74/.../224 once a 6 GiB
// one joins. The spaces are what statvfs gives as available (f_bavail ×
// f_frsize) on those images, made with the suite's mkfs options on this
// machine; their totals (f_blocks) give 43/.../213 instead.
func TestAutoVnodesAsSheepdog(t *testing.T) {
	free := map[int]uint64{1: 983769088, 2: 1983307776, 3: 2983374848, 4: 3979239424, 5: 4978253824, 6: 5977272320}
	for _, tc := range []struct {
		gib  []int
		want []uint16
	}{
		{[]int{1, 2, 3, 3, 4, 5}, []uint16{42, 85, 128, 128, 171, 214}},
		{[]int{1, 2, 3, 3, 4, 5, 6}, []uint16{37, 74, 112, 112, 149, 187, 224}},
		{[]int{1, 1, 1}, []uint16{128, 128, 128}},
	} {
		var nodes []proto.Node
		for _, g := range tc.gib {
			nodes = append(nodes, proto.Node{Space: free[g]})
		}
		var got []uint16
		for _, n := range AutoVnodes(nodes) {
			got = append(got, n.NrVnodes)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v GiB: vnodes %v, want %v", tc.gib, got, tc.want)
		}
	}
}

// Targets answers as Locate does, from its table or (for a ring too large
// for one) by walking, and allocates nothing once its table is built.
func TestTargetsMatchLocate(t *testing.T) {
	var big []proto.Node
	for i := range 600 {
		big = append(big, node(fmt.Sprintf("10.0.%d.%d:7000", i/250, i%250+1), uint32(i%5+1), 128))
	}
	small := []proto.Node{node("127.0.0.1:7000", 1, 128), node("127.0.0.1:7001", 1, 128), node("127.0.0.1:7002", 2, 128), node("127.0.0.1:7003", 3, 64)}
	for _, c := range []struct {
		name  string
		nodes []proto.Node
	}{{"small", small}, {"beyond the table", big}} {
		r := New(c.nodes)
		for copies := 1; copies <= 4; copies++ {
			for i := uint64(0); i < 3000; i++ {
				oid := proto.VidToDataOid(uint32(0x7c2b25+i%3), uint32(i*7919))
				got, want := r.Targets(oid, copies), r.Locate(oid, copies)
				if !slices.Equal(got, want) {
					t.Fatalf("%s: oid %x copies %d: Targets %v, Locate %v", c.name, oid, copies, got, want)
				}
				// An append by a caller copies: the table keeps its answer.
				_ = append(got, proto.Node{})
			}
		}
	}
	r := New(small)
	r.Targets(1, 3)
	if n := testing.AllocsPerRun(100, func() { r.Targets(0x7c2b2500000011, 3) }); n != 0 {
		t.Fatalf("Targets allocates %v times a call", n)
	}
}
