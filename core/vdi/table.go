package vdi

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Writes into an inode's data_vdi_id table drop the references they
// overwrite: QEMU's discard writes 0, dog zeroes a table before DEL_VDI,
// an index update replaces a parent's vid with the VDI's own after a
// copy-on-write (docs/protocol.md §4.7, docs/design.md §13 "Space
// reclamation"). WriteTable makes such a write
// and the reclaim of what it dropped one sequence: read the entries the
// write covers, write, read them again, and reclaim every entry that
// named a VDI before and names another (or none) after.
//
// Invariant: on this node, the read-write-read of one inode's table runs
// under that inode's table lock (Service.tables), so two writes of the
// same entries through this node cannot interleave and lose a dropped
// reference between them (the one each saw as "before" being the other's
// "after"). Writes of one inode through different gateways are not
// serialised; a reference lost that way is never reclaimed, the object is
// never removed wrongly: Reclaim removes only what no live inode names.

// tableLocks stripes the inodes' table locks.
const tableLocks = 64

// TableRange reports the entries [lo, hi) of data_vdi_id that a write of n
// bytes at off into object oid touches; ok is false when oid is not an
// inode or the write misses its table.
func TableRange(oid uint64, off int64, n int) (lo, hi uint32, ok bool) {
	end := off + int64(n)
	if !proto.IsVdiObj(oid) || end <= proto.DataVdiIDOffset || off >= proto.GrefOffset {
		return 0, 0, false
	}
	first := max(off, proto.DataVdiIDOffset)
	last := min(end, proto.GrefOffset)
	lo = uint32((first - proto.DataVdiIDOffset) / 4)
	hi = uint32((last - proto.DataVdiIDOffset + 3) / 4)
	return lo, hi, true
}

// WriteTable writes data at off into the inode object oid, which must
// touch its data_vdi_id table (TableRange), and reclaims the data objects
// the write left unreferenced. A write that would give a snapshot's table
// a new reference fails with READONLY (see addsSnapshotRefs). Reclaim
// failures are logged: the write itself has succeeded, and the next drop
// of the same reference tries again.
func (s *Service) WriteTable(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	lo, hi, ok := TableRange(oid, off, len(data))
	if !ok {
		return fmt.Errorf("write %016x at %d: not into an inode's table: %w", oid, off, proto.ResInvalidParms)
	}
	vid := proto.OidToVid(oid)
	var policy [1]byte
	if err := s.objects.ReadObject(ctx, oid, proto.InodeStorePolicyOffset, policy[:]); err != nil {
		return err
	}
	if policy[0] != 0 {
		// A hyper volume's table is its B-tree root (proto.Btree), not
		// references to drop; its objects are its own alone.
		return s.objects.WriteObject(ctx, oid, off, data, flags)
	}
	dropped, err := s.writeTable(ctx, oid, lo, hi, off, data, flags)
	if err != nil || len(dropped) == 0 {
		return err
	}
	if err := s.dropRefs(ctx, vid, s.isSnapshot(vid), dropped); err != nil {
		s.log.Warn("drop references", "vid", fmt.Sprintf("%x", vid), "err", err)
	}
	return nil
}

// writeTable is WriteTable's locked read-write-read; it returns the
// references the write dropped, with their grefs, and resets those grefs:
// an entry the write changed names the VDI's own new object (generation
// 0, copied by nobody) or nothing. Only the changed entries' grefs are
// reset (Sheepdog resets the whole range written, so an entry written
// unchanged would lose its generation).
//
// Invariant: the grefs are read after the table write and reset before
// the lock is released, so a drop is handed on exactly once per gref
// read on this node; a crash in between leaves a gref that no longer
// matches its entry, which dropFor sends to the scan.
func (s *Service) writeTable(ctx context.Context, oid uint64, lo, hi uint32, off int64, data []byte, flags uint16) ([]drop, error) {
	vid := proto.OidToVid(oid)
	mu := &s.tables[vid%tableLocks]
	mu.Lock()
	defer mu.Unlock()
	before := make([]byte, 4*(hi-lo))
	if err := s.objects.ReadObject(ctx, oid, int64(proto.DataVdiIDOff(lo)), before); err != nil {
		return nil, err
	}
	if s.addsSnapshotRefs(vid, lo, before, off, data) {
		// A snapshot's table never gains references. This is QEMU's index
		// update racing a `dog vdi snapshot`: READONLY makes it reload the
		// inode and resend the update to the new working VDI
		// (docs/qemu-client.md §9), instead of the entry landing in the
		// snapshot and missing from the working VDI. Zeroing stays
		// allowed (dog's delete).
		return nil, fmt.Errorf("inode %x is a snapshot's: %w", vid, proto.ResReadonly)
	}
	if err := s.objects.WriteObject(ctx, oid, off, data, flags); err != nil {
		return nil, err
	}
	after := make([]byte, len(before))
	if err := s.objects.ReadObject(ctx, oid, int64(proto.DataVdiIDOff(lo)), after); err != nil {
		return nil, nil // the write is done; reclamation waits for the next chance
	}
	var dropped []drop
	for i := uint32(0); i < hi-lo; i++ {
		old, cur := binary.LittleEndian.Uint32(before[4*i:]), binary.LittleEndian.Uint32(after[4*i:])
		if old != 0 && old != cur {
			dropped = append(dropped, drop{Ref: Ref{Vid: old, Index: lo + i}})
		}
	}
	if len(dropped) == 0 {
		return nil, nil
	}
	first, last := dropped[0].Index, dropped[len(dropped)-1].Index
	g, err := s.readGrefs(ctx, vid, first, last+1)
	if err != nil {
		// Unknown grefs: every drop goes to the scan.
		s.log.Warn("table write: grefs unreadable, dropped references checked by scan", "vid", fmt.Sprintf("%x", vid), "err", err)
		for i := range dropped {
			dropped[i].gref = proto.Gref{Generation: -1}
		}
		return dropped, nil
	}
	for i := range dropped {
		at := dropped[i].Index - first
		dropped[i].gref, g[at] = g[at], proto.Gref{}
	}
	if err := s.objects.WriteObject(ctx, oid, proto.GrefOff(first), proto.EncodeGrefs(g), flags); err != nil {
		// The grefs stay as they were: a later drop of the new entries
		// finds a gref that does not match them (dropFor: the scan).
		s.log.Warn("table write: resetting grefs failed", "vid", fmt.Sprintf("%x", vid), "err", err)
	}
	return dropped, nil
}

// isSnapshot reports whether vid is a live snapshot in the cluster state.
func (s *Service) isSnapshot(vid uint32) bool {
	snapshot := false
	s.cluster.View(func(st *cluster.State) {
		v := st.VdiState(vid)
		snapshot = v != nil && v.Snapshot && !v.Deleted
	})
	return snapshot
}

// addsSnapshotRefs reports whether writing data at off into the inode of
// vid, a snapshot, would set a data_vdi_id entry of [lo, lo+len(before)/4)
// to a new nonzero owner. before holds the current entries.
func (s *Service) addsSnapshotRefs(vid, lo uint32, before []byte, off int64, data []byte) bool {
	snapshot := false
	s.cluster.View(func(st *cluster.State) {
		v := st.VdiState(vid)
		snapshot = v != nil && v.Snapshot && !v.Deleted
	})
	if !snapshot {
		return false
	}
	start := int64(proto.DataVdiIDOff(lo))
	after := slices.Clone(before)
	from, to := max(off, start), min(off+int64(len(data)), start+int64(len(after)))
	copy(after[from-start:to-start], data[from-off:to-off])
	le := binary.LittleEndian
	for i := 0; i < len(after); i += 4 {
		if cur := le.Uint32(after[i:]); cur != 0 && cur != le.Uint32(before[i:]) {
			return true
		}
	}
	return false
}
