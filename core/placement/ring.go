// Package placement decides where objects live: Sheepdog's consistent-hash
// ring of virtual nodes (docs/protocol.md §5.2). Everything here is a pure
// function of the node list, so every sheep computes the same answer.
package placement

import (
	"math"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// maxZones caps the zone count used for copies, as Sheepdog does.
const maxZones = proto.MaxCopies

type vnode struct {
	hash uint64
	node int // index into Ring.nodes
}

// Ring is the vnode ring of one node list.
type Ring struct {
	nodes  []proto.Node
	vnodes []vnode // sorted by hash
	zones  int
	// tables[n] holds Targets' answers for n copies once built.
	tables [maxZones + 1]atomic.Pointer[[][]proto.Node]
}

// New builds the ring. Nodes with no vnodes (gateways) hold no data.
func New(nodes []proto.Node) *Ring {
	r := &Ring{nodes: slices.Clone(nodes)}
	slices.SortFunc(r.nodes, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	zones := map[uint32]bool{}
	for i, n := range r.nodes {
		if n.NrVnodes == 0 {
			continue
		}
		zones[n.Zone] = true
		key := n.HashKey()
		h := proto.Hash(key[:])
		for v := 0; v < int(n.NrVnodes); v++ {
			h = proto.HashNext(h)
			r.vnodes = append(r.vnodes, vnode{hash: h, node: i})
		}
	}
	sort.SliceStable(r.vnodes, func(a, b int) bool { return r.vnodes[a].hash < r.vnodes[b].hash })
	r.zones = min(len(zones), maxZones)
	return r
}

// Nodes returns the ring's node list in Sheepdog's node order.
func (r *Ring) Nodes() []proto.Node { return r.nodes }

// Zones is the number of distinct zones holding data (capped at 31).
func (r *Ring) Zones() int { return r.zones }

// Copies is the number of copies an object with nrCopies wanted gets:
// never more than the zones available.
func (r *Ring) Copies(nrCopies int) int { return min(nrCopies, r.zones) }

// Locate returns the nodes holding oid's copies, primary first. Replica k
// is the next vnode clockwise whose zone no earlier replica has.
func (r *Ring) Locate(oid uint64, nrCopies int) []proto.Node {
	n := r.Copies(nrCopies)
	if n == 0 || len(r.vnodes) == 0 {
		return nil
	}
	return r.walk(make([]proto.Node, 0, n), r.start(oid), n)
}

// start is the index of the first vnode clockwise from oid's hash.
func (r *Ring) start(oid uint64) int {
	h := proto.HashOid(oid)
	i := sort.Search(len(r.vnodes), func(i int) bool { return r.vnodes[i].hash >= h })
	if i == len(r.vnodes) {
		i = 0
	}
	return i
}

// walk appends to out the n nodes of distinct zones met clockwise from
// vnode i.
func (r *Ring) walk(out []proto.Node, i, n int) []proto.Node {
	var used [maxZones]uint32
	for steps, k := 0, 0; k < n && steps < len(r.vnodes); steps++ {
		nd := r.nodes[r.vnodes[(i+steps)%len(r.vnodes)].node]
		if slices.Contains(used[:k], nd.Zone) {
			continue
		}
		used[k] = nd.Zone
		out = append(out, nd)
		k++
	}
	return out
}

// maxTargetTable bounds the nodes a ring's table for one copy count
// holds (64 bytes each): rings of more vnodes answer Targets by walking.
const maxTargetTable = 1 << 16

// Targets is Locate without an allocation, for the request path: the
// nodes come from a table the ring builds at the first call for each copy
// count, one entry per vnode (the walk depends only on where it starts).
// The slice is shared: the caller must not modify it (an append copies
// it). A ring whose table would pass maxTargetTable nodes walks, as
// Locate.
func (r *Ring) Targets(oid uint64, nrCopies int) []proto.Node {
	n := r.Copies(nrCopies)
	if n == 0 || len(r.vnodes) == 0 {
		return nil
	}
	if len(r.vnodes)*n > maxTargetTable {
		return r.Locate(oid, nrCopies)
	}
	t := r.tables[n].Load()
	if t == nil {
		t = r.buildTable(n)
	}
	return (*t)[r.start(oid)]
}

// buildTable makes and keeps the targets of every starting vnode for n
// copies. Two callers may build it at once; both tables are the same.
func (r *Ring) buildTable(n int) *[][]proto.Node {
	all := make([]proto.Node, 0, len(r.vnodes)*n)
	t := make([][]proto.Node, len(r.vnodes))
	for i := range r.vnodes {
		from := len(all)
		all = r.walk(all, i, n)
		t[i] = all[from:len(all):len(all)]
	}
	r.tables[n].Store(&t)
	return &t
}

// Holds reports whether id is among oid's copies.
func (r *Ring) Holds(oid uint64, nrCopies int, id proto.NodeID) bool {
	for _, n := range r.Locate(oid, nrCopies) {
		if n.Same(id) {
			return true
		}
	}
	return false
}

// AutoVnodes sets each data node's vnode count proportional to its space,
// computed as Sheepdog's recalculate_vnodes does, so that objects land
// where it would place them: the average space of the non-gateway nodes
// in integer division, the factor space/average in single precision, and
// 128 × factor rounded half to even (rintf). Unlike Sheepdog, a node with
// space keeps at least 1 vnode (it would get 0 below 1/256 of the
// average, and hold nothing).
func AutoVnodes(nodes []proto.Node) []proto.Node {
	out := slices.Clone(nodes)
	var total uint64
	var n uint64
	for _, nd := range out {
		if nd.Space > 0 {
			total += nd.Space
			n++
		}
	}
	if n == 0 {
		return out
	}
	avg := total / n
	for i := range out {
		if out[i].Space == 0 {
			out[i].NrVnodes = 0
			continue
		}
		factor := float32(out[i].Space) / float32(avg)
		v := math.RoundToEven(float64(float32(proto.DefaultVnodes) * factor))
		out[i].NrVnodes = uint16(max(1, min(v, math.MaxUint16)))
	}
	return out
}
