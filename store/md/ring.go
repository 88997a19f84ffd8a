package md

import (
	"slices"
	"sort"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// VdiskSize is the space one virtual disk stands for: a disk gets one
// vdisk on the ring per VdiskSize of its space, rounded up, as in
// Sheepdog's md (MD_VDISK_SIZE).
const VdiskSize = 16 << 20

// RingDisk is one disk as the ring sees it: its path, whose hash seeds
// its vdisks, and the space that decides how many it gets.
type RingDisk struct {
	Path  string
	Space uint64
}

// Ring is a node's hash ring of its own disks, Sheepdog's md placement:
// every disk owns vdisks at the hashes proto.Hash(path), then
// proto.HashNext of the previous one, one vdisk per VdiskSize of its
// space; an object lives on the disk of the first vdisk whose hash is at
// or after proto.HashOid(oid), wrapping around. It is a pure function of
// the disk list, so the same disks always place an object the same way,
// and adding or removing a disk moves only the objects that hash to its
// vdisks.
type Ring struct {
	vdisks []vdisk // sorted by hash
	n      int
}

type vdisk struct {
	hash uint64
	disk int // index into the disk list given to NewRing
}

// Vdisks is the number of vdisks a disk of space bytes gets: space
// divided by VdiskSize rounded up, at least one.
func Vdisks(space uint64) int {
	return max(1, int((space+VdiskSize-1)/VdiskSize))
}

// NewRing builds the ring of disks; Locate answers indexes into disks.
func NewRing(disks []RingDisk) *Ring {
	r := &Ring{n: len(disks)}
	for i, d := range disks {
		h := proto.Hash([]byte(d.Path))
		for range Vdisks(d.Space) {
			h = proto.HashNext(h)
			r.vdisks = append(r.vdisks, vdisk{hash: h, disk: i})
		}
	}
	// Stable: on a hash collision (Sheepdog panics) the earlier disk's
	// vdisk comes first, so the answer still depends on the list only.
	slices.SortStableFunc(r.vdisks, func(a, b vdisk) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return r
}

// Len is the number of disks on the ring.
func (r *Ring) Len() int { return r.n }

// Locate returns the index of the disk holding the object stored under
// key (an oid, or a proto.StripKey: a strip goes where its object's id
// hashes, as in Sheepdog), or -1 for a ring without disks.
func (r *Ring) Locate(key uint64) int {
	switch r.n {
	case 0:
		return -1
	case 1:
		return 0
	}
	oid, _, _ := proto.SplitKey(key)
	h := proto.HashOid(oid)
	i := sort.Search(len(r.vdisks), func(i int) bool { return r.vdisks[i].hash >= h })
	if i == len(r.vdisks) {
		i = 0
	}
	return r.vdisks[i].disk
}
