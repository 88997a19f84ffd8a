package vdi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// Space reclamation by generational reference counts, as Sheepdog's
// (docs/protocol.md §4.7, proto.LedgerDecref): a snapshot, clone or rebase
// counts the references it copies in the base's gref[] (shareRefs); an
// inode that stops naming a data object (a table write, a delete) drops
// its reference with the gref of that entry (dropRefs):
//
//   - the inode's own object, never copied (gref {0,0}): removed outright;
//   - a counted reference: DECREF of the object's ledger; the object goes
//     when the ledger becomes all zero;
//   - a reference the grefs do not account for (dropFor says which):
//     removed only if no live inode names it (Reclaim, the scan).
//
// Why the scan stays beside the ledger: a drop is a decrement, not an
// idempotent write. gateway.Decref sends it to each replica at most once,
// but a replica that gets the ledger by recovery after applying a drop
// in an earlier epoch, or two gateways dropping the same entry at once
// (both read it before either wrote), apply a drop twice, and a ledger
// that reached zero early would free an object a live inode still names.
// So a ledger's zero is checked against the live inodes' tables before the
// data object is removed (dropRefs, Decref): the ledger decides when an
// object may go, the scan can only keep it. The check costs one small read
// per live VDI per table write (or delete) that freed shared objects,
// however many (a dog delete batch frees up to 128).
// Inodes written before this accounting existed (every gref zero) are the
// other reason: their copied references are not counted anywhere.

// dropAction is what becomes of a data object an inode stops naming.
type dropAction uint8

const (
	// dropRemove: the holder's own object, never copied: remove it.
	dropRemove dropAction = iota
	// dropLedger: a counted reference: DECREF the object's ledger.
	dropLedger
	// dropScan: a reference the grefs do not account for: remove the
	// object only if no live inode names it.
	dropScan
)

func (a dropAction) String() string {
	return [...]string{"remove", "ledger", "scan"}[a]
}

// dropFor decides what becomes of data object (owner, i) when inode
// holder, a snapshot or not, drops it; g is the holder's gref[i].
//
// The accounting keeps: a holder's own objects are generation 0 (a table
// write resets the gref of every entry it changes); a copied reference is
// one generation older than its parent's, so at least 1; counts are only
// ever raised on a base, which becomes a snapshot. A gref that breaks
// these was not kept by this accounting: the inode predates it, or its
// table was written past core/vdi (an in-process front-end writing the
// gateway directly).
func dropFor(holder uint32, snapshot bool, owner uint32, g proto.Gref) dropAction {
	if owner != holder {
		if g.Generation < 1 {
			return dropScan
		}
		return dropLedger
	}
	switch {
	case g.Generation != 0:
		return dropScan
	case g.Count != 0:
		return dropLedger
	case snapshot:
		// A snapshot whose own objects were not counted (taken before
		// the accounting existed, or an entry allocated while the
		// snapshot was being taken): a copy may still name them.
		return dropScan
	}
	return dropRemove
}

// drop is a reference an inode gave up, with its gref.
type drop struct {
	Ref
	gref proto.Gref
}

// dropRefs acts on the references inode holder (a snapshot or not) just
// stopped naming. The objects whose ledgers reach zero are checked against
// the live inodes together with the drops dropFor sends to the scan: one
// read of each live table per call, however many objects. It returns the
// first error; the other drops go on.
func (s *Service) dropRefs(ctx context.Context, holder uint32, snapshot bool, drops []drop) error {
	var mu sync.Mutex
	var scan, zeros []Ref
	var act []drop
	for _, d := range drops {
		if dropFor(holder, snapshot, d.Vid, d.gref) == dropScan {
			scan = append(scan, d.Ref)
		} else {
			act = append(act, d)
		}
	}
	err := fanout.Run(len(act), 16, func(i int) error {
		d := act[i]
		zero, err := s.countDrop(ctx, proto.VidToDataOid(d.Vid, d.Index), uint32(d.gref.Generation), uint32(d.gref.Count))
		if zero {
			mu.Lock()
			zeros = append(zeros, d.Ref)
			mu.Unlock()
		}
		return err
	})
	kept, serr := s.scanFree(ctx, append(scan, zeros...))
	s.keptAtZero(kept, zeros)
	if err == nil {
		err = serr
	}
	return err
}

// Decref drops a reference of generation gen, copied count times, to the
// data object dataOid (DECREF_OBJ), and frees the object if that was its
// last reference (countDrop, then the check of the live inodes).
func (s *Service) Decref(ctx context.Context, dataOid uint64, gen, count uint32) error {
	if !proto.IsDataObj(dataOid) {
		return fmt.Errorf("decref %016x: not a data object: %w", dataOid, proto.ResInvalidParms)
	}
	zero, err := s.countDrop(ctx, dataOid, gen, count)
	if zero {
		r := []Ref{{Vid: proto.OidToVid(dataOid), Index: proto.DataIndex(dataOid)}}
		kept, serr := s.scanFree(ctx, r)
		s.keptAtZero(kept, r)
		if err == nil {
			err = serr
		}
	}
	return err
}

// countDrop counts the drop of a reference of generation gen, copied
// count times, to data object oid (Sheepdog's sd_dec_object_refcnt):
// generation 0 copied by nobody is the only reference, and the object is
// removed here; otherwise the object's ledger counts the drop, and zero
// reports that a copy of it became all zero: no reference is left, and
// the caller frees the object once the live inodes agree.
func (s *Service) countDrop(ctx context.Context, oid uint64, gen, count uint32) (zero bool, err error) {
	if gen == 0 && count == 0 {
		if err := s.objects.RemoveObject(ctx, oid); err != nil && !errors.Is(err, proto.ResNoObj) {
			return false, err
		}
		return false, nil
	}
	zero, err = s.objects.Decref(ctx, proto.LedgerOid(oid), gen, count)
	if err != nil {
		// Some copies may have counted the drop: a zero among them
		// still frees the object (a copy that missed a drop is never
		// zero early).
		s.log.Warn("decref: not every copy of the ledger counted the drop", "oid", fmt.Sprintf("%016x", oid), "err", err)
	}
	return zero, err
}

// keptAtZero logs the objects whose ledger reached zero (zeros) that a
// live inode still names (kept, from scanFree): the counts and the tables
// disagree, and the object stays (see the top of this file).
func (s *Service) keptAtZero(kept, zeros []Ref) {
	if len(kept) == 0 || len(zeros) == 0 {
		return
	}
	zero := make(map[Ref]bool, len(zeros))
	for _, z := range zeros {
		zero[z] = true
	}
	for _, k := range kept {
		if zero[k] {
			s.log.Warn("ledger reached zero while a live VDI still names the object; object kept", "oid", fmt.Sprintf("%016x", proto.VidToDataOid(k.Vid, k.Index)))
		}
	}
}

// shareRefs counts a new inode's copy of table, read from inode base, in
// base's gref[] (proto.ShareGrefs) and returns the new inode's grefs. It
// runs under base's table lock, so a table write of base through this node
// does not reset a gref between its read and this write.
//
// Invariant: called before the new inode is written; the base's counts
// must include every copy that exists (a failure here fails the create).
// A count raised for a copy that is then never written only keeps objects
// longer.
func (s *Service) shareRefs(ctx context.Context, base uint32, table []uint32) ([]proto.Gref, error) {
	last := lastNonZero(table)
	if last < 0 {
		return nil, nil
	}
	mu := &s.tables[base%tableLocks]
	mu.Lock()
	defer mu.Unlock()
	buf := make([]byte, 8*(last+1))
	oid := proto.VidToVdiOid(base)
	if err := s.objects.ReadObject(ctx, oid, proto.GrefOffset, buf); err != nil {
		return nil, fmt.Errorf("read grefs of %x: %w", base, err)
	}
	g := proto.DecodeGrefs(buf)
	child := proto.ShareGrefs(table[:last+1], g)
	if err := s.objects.WriteObject(ctx, oid, proto.GrefOffset, proto.EncodeGrefs(g), 0); err != nil {
		return nil, fmt.Errorf("count shared references in %x: %w", base, err)
	}
	return child, nil
}

// readGrefs reads gref[lo, hi) of inode vid.
func (s *Service) readGrefs(ctx context.Context, vid, lo, hi uint32) ([]proto.Gref, error) {
	buf := make([]byte, 8*(hi-lo))
	if err := s.objects.ReadObject(ctx, proto.VidToVdiOid(vid), proto.GrefOff(lo), buf); err != nil {
		return nil, fmt.Errorf("read grefs of %x: %w", vid, err)
	}
	return proto.DecodeGrefs(buf), nil
}
