package md

import (
	"math"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestVdisks(t *testing.T) {
	for _, c := range []struct {
		space uint64
		want  int
	}{
		{0, 1}, {1, 1}, {VdiskSize, 1}, {VdiskSize + 1, 2}, {10 * VdiskSize, 10}, {1 << 40, 65536},
	} {
		if got := Vdisks(c.space); got != c.want {
			t.Errorf("Vdisks(%d) = %d, want %d", c.space, got, c.want)
		}
	}
}

func TestRingEmptyAndSingle(t *testing.T) {
	if got := NewRing(nil).Locate(1); got != -1 {
		t.Errorf("empty ring: Locate = %d, want -1", got)
	}
	r := NewRing([]RingDisk{{Path: "/a", Space: 1 << 30}})
	for oid := uint64(1); oid < 100; oid++ {
		if got := r.Locate(oid); got != 0 {
			t.Fatalf("one disk: Locate(%d) = %d", oid, got)
		}
	}
}

// oids are object ids of a few VDIs, as a cluster stores them.
func oids(n int) []uint64 {
	out := make([]uint64, 0, n)
	for i := 0; len(out) < n; i++ {
		vid := uint64(0x7c2b25 + i/1000)
		out = append(out, vid<<32|uint64(i%1000))
	}
	return out
}

// Objects spread over the disks in proportion to their space.
func TestRingSpreadsByCapacity(t *testing.T) {
	disks := []RingDisk{{"/d0", 10 << 30}, {"/d1", 10 << 30}, {"/d2", 20 << 30}}
	r := NewRing(disks)
	const n = 200000
	count := make([]int, len(disks))
	for _, oid := range oids(n) {
		count[r.Locate(oid)]++
	}
	want := []float64{0.25, 0.25, 0.5}
	for i, c := range count {
		if got := float64(c) / n; math.Abs(got-want[i]) > 0.03 {
			t.Errorf("disk %d holds %.3f of the objects, want %.2f±0.03 (counts %v)", i, got, want[i], count)
		}
	}
}

// Adding a disk moves objects only onto it; removing one moves only its
// own objects. Placement depends on the disks, not their order.
func TestRingMovesOnlyWhatItMust(t *testing.T) {
	three := []RingDisk{{"/d0", 1 << 30}, {"/d1", 1 << 30}, {"/d2", 1 << 30}}
	four := append(append([]RingDisk{}, three...), RingDisk{"/d3", 1 << 30})
	r3, r4 := NewRing(three), NewRing(four)
	order := []RingDisk{three[2], three[0], three[1]}
	reordered := NewRing(order)
	moved := 0
	for _, oid := range oids(50000) {
		a, b := r3.Locate(oid), r4.Locate(oid)
		if a != b {
			if b != 3 {
				t.Fatalf("oid %x moved from disk %d to %d, not to the new disk", oid, a, b)
			}
			moved++
		}
		if p := order[reordered.Locate(oid)].Path; p != three[a].Path {
			t.Fatalf("oid %x: %s in one order, %s in another", oid, three[a].Path, p)
		}
	}
	if frac := float64(moved) / 50000; frac < 0.2 || frac > 0.3 {
		t.Errorf("adding a fourth equal disk moved %.3f of the objects, want about 0.25", frac)
	}
}

// Every strip of an erasure-coded object lives on its object's disk.
func TestRingStripsFollowTheirObject(t *testing.T) {
	r := NewRing([]RingDisk{{"/d0", 1 << 30}, {"/d1", 1 << 30}, {"/d2", 1 << 30}})
	for _, oid := range oids(2000) {
		want := r.Locate(oid)
		for i := range 6 {
			if got := r.Locate(proto.StripKey(oid, i)); got != want {
				t.Fatalf("strip %d of %x on disk %d, object on %d", i, oid, got, want)
			}
		}
	}
}

// The ring is Sheepdog's: the vdisks of a disk are the hash chain of its
// path, and an object goes to the first vdisk at or after its hash.
func TestRingIsTheHashChain(t *testing.T) {
	disks := []RingDisk{{"/a", 2 * VdiskSize}, {"/b", VdiskSize}}
	r := NewRing(disks)
	type v struct {
		h uint64
		d int
	}
	var all []v
	for i, d := range disks {
		h := proto.Hash([]byte(d.Path))
		for range Vdisks(d.Space) {
			h = proto.HashNext(h)
			all = append(all, v{h, i})
		}
	}
	for _, oid := range oids(5000) {
		h := proto.HashOid(oid)
		best, first := -1, -1
		for i, x := range all {
			if x.h >= h && (best < 0 || x.h < all[best].h) {
				best = i
			}
			if first < 0 || x.h < all[first].h {
				first = i
			}
		}
		if best < 0 {
			best = first
		}
		if got := r.Locate(oid); got != all[best].d {
			t.Fatalf("oid %x: disk %d, want %d", oid, got, all[best].d)
		}
	}
}
