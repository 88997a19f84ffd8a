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
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Objects is the object I/O vdi needs (core/gateway implements it).
type Objects interface {
	ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error
	WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error
	RemoveObject(ctx context.Context, oid uint64) error
	// Decref applies a dropped reference to every copy of a ledger and
	// reports whether one became all zero (gateway.Decref).
	Decref(ctx context.Context, ledgerOid uint64, gen, count uint32) (zero bool, err error)
}

// headerProbeSize is how much of an inode lookup reads: the fixed fields.
const headerProbeSize = 572

// lookupResult is what a probe for a name found.
type lookupResult struct {
	vid      uint32 // the match (SUCCESS), or the latest snapshot when the working VDI is gone
	free     uint32 // the slot a new VDI of this name would take
	nextSnap uint32 // snap_id for a new working VDI (latest snapshot + 1), or 0
	ino      proto.Inode
	// pending is a live vid of the chain whose inode is not written yet:
	// a create in flight, whose name the lookup could not see.
	pending uint32
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
	deleted := map[uint32]bool{}
	recycle := false
	s.cluster.View(func(st *cluster.State) {
		if st.Flags&proto.ClusterFlagRecycleVid != 0 {
			// Recycled vids break probe chains (a family freed below a
			// name's vid), so every vid is a candidate, newest (highest)
			// first, and a new VDI takes the lowest free vid, as
			// Sheepdog's vdi_lookup does with -R.
			left, right = 1, st.FirstClear(1)
			if right == proto.NrVdis {
				err = fmt.Errorf("no free vid: %w", proto.ResFullVdi)
				return
			}
			vids := st.SortedVids()
			for i := len(vids) - 1; i >= 0; i-- {
				candidates = append(candidates, vids[i])
				deleted[vids[i]] = st.IsDeleted(vids[i])
			}
			recycle = true
			return
		}
		right, err = probeRange(st, left)
		if err != nil || right == left {
			return
		}
		for _, v := range chain(left, right) {
			if st.InUse(v) || st.IsDeleted(v) {
				candidates = append(candidates, v)
				deleted[v] = st.IsDeleted(v)
			}
		}
	})
	if err != nil {
		return r, err
	}
	r.free = right
	if right == left && !recycle {
		return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
	}
	wantSnap := tag != "" || snapid != 0
	nameSeen := false
	buf := make([]byte, headerProbeSize)
	for _, v := range candidates {
		if err := s.objects.ReadObject(ctx, proto.VidToVdiOid(v), 0, buf); err != nil {
			if errors.Is(err, proto.ResNoObj) {
				if !deleted[v] && r.pending == 0 {
					r.pending = v
				}
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
			if recycle {
				// A recycled vid may put the working VDI below
				// its snapshots: look on, remembering the latest
				// snapshot (Sheepdog stops here and loses the
				// working VDI).
				if ino.SnapID+1 > r.nextSnap {
					r.vid, r.ino, r.nextSnap = v, ino, ino.SnapID+1
				}
				continue
			}
			// The working VDI was deleted; a new one continues the
			// snapshot numbering.
			r.vid, r.ino, r.nextSnap = v, ino, ino.SnapID+1
			return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
		}
		r.vid, r.ino, r.nextSnap = v, ino, 0
		return r, nil
	}
	if wantSnap && nameSeen {
		return r, fmt.Errorf("%q tag %q snapshot %d: %w", name, tag, snapid, proto.ResNoTag)
	}
	return r, fmt.Errorf("%q: %w", name, proto.ResNoVdi)
}

// pendingWait bounds how long a create waits for the inode of a vid
// allocated moments ago (through any node) to be written. The creator
// writes it right after its vid is registered, so this is milliseconds;
// only a creator that died in between leaves it unwritten for good, and
// then the create gives that vid up (deleted) and goes ahead. A creator
// that writes its inode later still finds its vid deleted and fails.
var pendingWait = 5 * time.Second // a var for tests of the dead-creator case

// lookupForCreate is lookup for a create, snapshot or clone of name. A
// vid of name's chain whose inode is not written yet may be the same
// name, registered through another node an instant earlier: looking past
// it would create the name twice (or snapshot a working VDI that is one
// no more), so the lookup waits for that inode first.
func (s *Service) lookupForCreate(ctx context.Context, name string) (lookupResult, error) {
	deadline := time.Now().Add(pendingWait)
	abandoned := false
	// The inode is written by another node, which tells nobody: retry
	// with backoff, 10 ms doubling to 200 ms.
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		r, err := s.lookup(ctx, name, "", 0)
		if r.pending == 0 || abandoned && time.Now().After(deadline) {
			return r, err // (still pending: could not give it up; create past it)
		}
		if time.Now().After(deadline) {
			abandoned = true
			// Left by a creator that died (or, before creates were all or
			// nothing, failed) between registering the vid and writing
			// its inode: clean it, so that listings stop tripping over
			// it, and look again.
			s.log.Warn("inode of an allocated vid never written; giving the vid up", "name", name, "vid", fmt.Sprintf("%x", r.pending))
			s.abandon(r.pending, 0, fmt.Errorf("no inode after %v", pendingWait))
			deadline = time.Now().Add(pendingWait)
			continue
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(delay):
		}
	}
}
