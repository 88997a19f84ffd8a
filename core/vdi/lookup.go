// Package vdi implements the server side of VDI management: lookup by name
// (Sheepdog's hash + linear probing), create, snapshot, clone, delete with
// space reclamation, and locks. Inodes live in the object store and are
// reached through Objects; the ordered cluster state (bitmaps, vdi_state)
// through a cluster.Driver.
package vdi

import (
	"context"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Objects is the object I/O vdi needs (core/gateway implements it).
type Objects interface {
	ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error
	WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error
	RemoveObject(ctx context.Context, oid uint64) error
}

// headerProbeSize is how much of an inode lookup reads: the fixed fields.
const headerProbeSize = 572

// lookupResult is what a probe for a name found.
type lookupResult struct {
	vid      uint32 // the match (SUCCESS), or the latest snapshot when the working VDI is gone
	free     uint32 // the slot a new VDI of this name would take
	nextSnap uint32 // snap_id for a new working VDI (latest snapshot + 1), or 0
	ino      proto.Inode
}

// probeRange returns [left, right) of the probe chain of a name hash: right
// is the first vid ≥ left with a clear in-use bit, wrapping to 1.
func probeRange(s *cluster.State, left uint32) (right uint32, err error) {
	right = s.FirstClear(left)
	if right == proto.NrVdis {
		right = s.FirstClear(1)
		if right >= left {
			return 0, fmt.Errorf("no free vid: %w", proto.ResFullVdi)
		}
	}
	return right, nil
}

// chain lists the vids to examine, newest first: from right-1 down to left,
// wrapping below 1 to the top of the vid space.
func chain(left, right uint32) []uint32 {
	var vids []uint32
	if right > left {
		for v := right - 1; v >= left && v > 0; v-- {
			vids = append(vids, v)
		}
		return vids
	}
	for v := right - 1; v >= 1 && right > 0; v-- {
		vids = append(vids, v)
	}
	for v := uint32(proto.NrVdis - 1); v >= left; v-- {
		vids = append(vids, v)
	}
	return vids
}

// lookup finds name (plus tag or snapid) following §4.3.
func (s *Service) lookup(ctx context.Context, name, tag string, snapid uint32) (lookupResult, error) {
	var r lookupResult
	// See every VDI acknowledged through any node before probing.
	if err := s.cluster.Sync(ctx); err != nil {
		return r, err
	}
	left := proto.VdiNameHash(name)
	var right uint32
	var err error
	var candidates []uint32
	s.cluster.View(func(st *cluster.State) {
		right, err = probeRange(st, left)
		if err != nil || right == left {
			return
		}
		for _, v := range chain(left, right) {
			if st.InUse(v) || st.IsDeleted(v) {
				candidates = append(candidates, v)
			}
		}
	})
	if err != nil {
		return r, err
	}
	r.free = right
	if right == left {
		return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
	}
	wantSnap := tag != "" || snapid != 0
	nameSeen := false
	buf := make([]byte, headerProbeSize)
	for _, v := range candidates {
		if err := s.objects.ReadObject(ctx, proto.VidToVdiOid(v), 0, buf); err != nil {
			if errors.Is(err, proto.ResNoObj) {
				continue // allocated, inode not written yet
			}
			return r, fmt.Errorf("read inode %x: %w", v, err)
		}
		var ino proto.Inode
		if err := ino.UnmarshalHeader(buf); err != nil {
			return r, err
		}
		if ino.Name != name {
			continue
		}
		if wantSnap {
			if !ino.IsSnapshot() {
				nameSeen = true
				continue
			}
			if (tag != "" && ino.Tag == tag) || (snapid != 0 && ino.SnapID == snapid) {
				r.vid, r.ino = v, ino
				return r, nil
			}
			nameSeen = true
			continue
		}
		if ino.IsSnapshot() {
			// The working VDI was deleted; a new one continues the
			// snapshot numbering.
			r.vid, r.ino, r.nextSnap = v, ino, ino.SnapID+1
			return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
		}
		r.vid, r.ino = v, ino
		return r, nil
	}
	if wantSnap && nameSeen {
		return r, fmt.Errorf("%q tag %q snapshot %d: %w", name, tag, snapid, proto.ResNoTag)
	}
	return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
}
