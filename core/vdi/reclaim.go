package vdi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// The scan (see ledger.go for when it is used): a dropped reference is
// checked against every live inode, and the data object (vid, idx) is
// removed when no live (not deleted) inode's data_vdi_id[idx] names vid
// any more. Object idx of any VDI can only be named at index idx, so one
// range of each table is enough.
//
// Invariant kept: an object is removed only when no live inode names it.
// References only move between inodes by copying a table (snapshot, clone,
// rebase) from an inode that names them at that moment, and a reference is
// only dropped by overwriting a table entry (a write, dog zeroing the table
// before DEL_VDI) or by deleting the inode, after which the drop is checked
// here.

// Ref names data object Index of VDI Vid.
type Ref struct{ Vid, Index uint32 }

// Reclaim removes, on every replica, each data object of refs that no live
// VDI references any more, with its ledger if it has one. Callers pass
// references they just dropped that the reference counts do not account
// for (dropFor), and the objects whose ledgers reached zero, to check.
func (s *Service) Reclaim(ctx context.Context, refs []Ref) error {
	_, err := s.scanFree(ctx, refs)
	return err
}

// scanFree is Reclaim; it returns the references a live inode still names
// (their objects kept).
//
// The owner of an object is checked first: a live snapshot names its own
// objects until it is deleted, so the common case (a copy-on-write away
// from a snapshot) costs one small read.
func (s *Service) scanFree(ctx context.Context, refs []Ref) (kept []Ref, err error) {
	if len(refs) == 0 {
		return nil, nil
	}
	cand := make(map[Ref]bool, len(refs))
	for _, r := range refs {
		cand[r] = true
	}
	defer func() {
		for _, r := range refs {
			if !cand[r] {
				kept = append(kept, r)
			}
		}
	}()
	owners := map[uint32]bool{}
	s.cluster.View(func(st *cluster.State) {
		for r := range cand {
			if v := st.VdiState(r.Vid); v != nil && !v.Deleted {
				owners[r.Vid] = true
			}
		}
	})
	for v := range owners {
		if err := s.dropNamed(ctx, v, cand); err != nil {
			return nil, err
		}
	}
	if len(cand) == 0 {
		return nil, nil
	}
	var live []uint32
	s.cluster.View(func(st *cluster.State) {
		for _, v := range st.SortedVids() {
			if !st.IsDeleted(v) && !owners[v] {
				live = append(live, v)
			}
		}
	})
	for _, v := range live {
		if len(cand) == 0 {
			return nil, nil
		}
		if err := s.dropNamed(ctx, v, cand); err != nil {
			return nil, err
		}
	}
	var firstErr error
	for c := range cand {
		oid := proto.VidToDataOid(c.Vid, c.Index)
		for _, o := range []uint64{oid, proto.LedgerOid(oid)} {
			err := s.objects.RemoveObject(ctx, o)
			if err != nil && !errors.Is(err, proto.ResNoObj) && firstErr == nil {
				firstErr = err
			}
		}
	}
	return nil, firstErr
}

// dropNamed reads the part of vid's table that covers the candidates and
// removes from cand every reference it names. A missing inode (allocated,
// not written yet) names nothing.
func (s *Service) dropNamed(ctx context.Context, vid uint32, cand map[Ref]bool) error {
	lo, hi := uint32(proto.MaxDataIndexes), uint32(0)
	for r := range cand {
		lo, hi = min(lo, r.Index), max(hi, r.Index)
	}
	if lo > hi || lo >= proto.MaxDataIndexes {
		return nil
	}
	hi = min(hi, proto.MaxDataIndexes-1)
	buf := make([]byte, 4*(hi-lo+1))
	if err := s.objects.ReadObject(ctx, proto.VidToVdiOid(vid), int64(proto.DataVdiIDOff(lo)), buf); err != nil {
		if errors.Is(err, proto.ResNoObj) {
			return nil
		}
		return err
	}
	for i := lo; i <= hi; i++ {
		if owner := binary.LittleEndian.Uint32(buf[4*(i-lo):]); owner != 0 {
			delete(cand, Ref{owner, i})
		}
	}
	return nil
}

// maxVMStateObjects bounds the vmstate objects removed for one inode: the
// index space of a table (2^20 objects, 1 TiB of VM state at the smallest
// object size). A larger vm_state_size is not something savevm writes; it
// would only turn a damaged header into billions of removals.
const maxVMStateObjects = proto.MaxDataIndexes

// removeVMState removes the vmstate objects of vid, just deleted, whose
// inode was ino: indices 0 .. ceil(vm_state_size / object size)-1, where
// QEMU's savevm put them (index = pos / (1 << block_size_shift),
// docs/qemu-client.md §8.16). A missing object is fine: savevm may not have
// written every one, or an earlier attempt removed it.
//
// No reference check: a vmstate object belongs to its vid alone (no
// data_vdi_id names it; snapshot, clone and rebase copy tables, never
// vmstate). Only a deleted vid's objects go: the snapshot a "goto" or
// loadvm reads from (parent_vdi_id) is a live VDI, and deleting the
// working VDI on the way there removes only the working VDI's own.
func (s *Service) removeVMState(ctx context.Context, vid uint32, ino *proto.Inode) error {
	if ino.VMStateSize == 0 {
		return nil
	}
	size := uint64(ino.ObjectSize())
	n := (ino.VMStateSize + size - 1) / size
	if n > maxVMStateObjects {
		s.log.Warn("vm_state_size over the limit; removing the first objects only", "vid", fmt.Sprintf("%x", vid),
			"vm_state_size", ino.VMStateSize, "objects", n, "limit", maxVMStateObjects)
		n = maxVMStateObjects
	}
	var firstErr error
	for idx := uint32(0); uint64(idx) < n; idx++ {
		err := s.objects.RemoveObject(ctx, proto.VidToVmstateOid(vid, idx))
		if err != nil && !errors.Is(err, proto.ResNoObj) && firstErr == nil {
			firstErr = fmt.Errorf("remove vmstate %d of %x: %w", idx, vid, err)
		}
	}
	return firstErr
}
