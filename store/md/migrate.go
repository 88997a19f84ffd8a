package md

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// retryMoves is how long the migrator waits before another pass when
// objects could not be moved to their ring disk (a full disk, say).
const retryMoves = 10 * time.Second

func (s *Store) kickMigrator() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// migrator moves objects to their ring disks whenever the layout is not
// settled: after a start with another disk list, a plug or an unplug.
// One pass walks every disk; a pass that ends with the layout it started
// from publishes it settled (draining disks dropped and closed) and runs
// the node's recovery (OnChange) for what could not be moved. A layout
// changed during the pass gets a pass of its own.
func (s *Store) migrator() {
	defer close(s.stopped)
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		for !s.closed.Load() {
			l := s.lay.Load()
			if l.settled && len(l.draining) == 0 {
				break
			}
			start := time.Now()
			moved, left, lost := s.pass(l)
			if s.closed.Load() {
				return
			}
			s.admin.Lock()
			same := s.lay.Load() == l
			if same {
				nl := &layout{disks: l.disks, ring: l.ring, settled: left == 0}
				s.lay.Store(nl)
				// Closed under the admin lock: a plug of the same path
				// right after the layout settles must find it unlocked.
				for _, d := range l.draining {
					d.close()
					s.log.Info("md: unplugged disk let go", "path", d.path)
				}
			}
			s.admin.Unlock()
			if !same {
				continue
			}
			s.log.Info("md: objects moved to their disks", "moved", moved, "left_to_recovery", lost, "not_moved", left,
				"disks", len(l.disks), "took", time.Since(start).Round(time.Millisecond))
			s.changed()
			if left == 0 {
				break
			}
			select {
			case <-s.stop:
				return
			case <-time.After(retryMoves):
			}
		}
	}
}

// pass moves every object of l's disks that is not on its ring disk, and
// every object of its draining disks. left counts the objects of ring
// disks that stay misplaced; lost those of draining disks that could not
// be moved (recovery fetches them from other nodes).
func (s *Store) pass(l *layout) (moved, left, lost int) {
	var buf []byte
	for _, d := range append(slices.Clip(l.disks), l.draining...) {
		draining := slices.Contains(l.draining, d)
		oids, err := d.st.List()
		if err != nil {
			s.log.Error("md: list a disk's objects", "path", d.path, "err", err)
			if isDiskFault(err) {
				s.fail(d, err)
			}
			if !draining {
				left++
			}
			continue
		}
		if draining {
			s.copyStale(d)
		}
		for _, oid := range oids {
			if s.closed.Load() {
				return
			}
			if !draining && l.home(oid) == d {
				continue
			}
			var err error
			buf, err = s.move(oid, d, buf)
			switch {
			case err == nil:
				moved++
			case draining:
				lost++
			default:
				left++
			}
			if err != nil {
				s.log.Warn("md: move an object to its disk", "oid", proto.ObjectName(oid), "from", d.path, "err", err)
			}
		}
	}
	return moved, left, lost
}

// copyStale copies the stale copies of d, a disk being emptied, to the
// disks that now hold their objects: recovery may need them when no
// current copy survives.
func (s *Store) copyStale(d *disk) {
	stale, err := d.st.ListStale()
	if err != nil {
		s.log.Warn("md: list the stale copies of an unplugged disk", "path", d.path, "err", err)
		return
	}
	failed := 0
	for _, so := range stale {
		if s.closed.Load() {
			return
		}
		if err := s.lay.Load().home(so.Oid).st.CopyStale(d.st, so.Oid, so.Epoch); err != nil {
			failed++
		}
	}
	if failed > 0 {
		s.log.Warn("md: stale copies of an unplugged disk not kept", "path", d.path, "copies", failed)
	}
}

// move moves oid from disk from to its ring disk in the current layout,
// holding oid's gate exclusively (see the package comment), in buf, grown
// as needed and returned. A copy already on the ring disk wins (a move
// cut short by a crash); a copy that fails its checksums is dropped, for
// recovery to fetch a good one.
func (s *Store) move(oid uint64, from *disk, buf []byte) ([]byte, error) {
	g := s.gate(oid)
	g.Lock()
	defer g.Unlock()
	to := s.lay.Load().home(oid)
	if to == from {
		return buf, nil
	}
	size, err := from.st.Size(oid)
	if errors.Is(err, proto.ResNoObj) {
		return buf, nil // removed meanwhile
	}
	if err != nil {
		return buf, err
	}
	if to.st.Exists(oid) {
		return buf, from.st.Remove(s.ctx, oid)
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	data := buf[:size]
	if err := from.st.ReadAt(s.ctx, oid, data, 0); err != nil {
		switch {
		case isDiskFault(err):
			s.fail(from, err)
		case errors.Is(err, store.ErrChecksum):
			if rerr := from.st.Remove(s.ctx, oid); rerr == nil {
				s.changed() // recovery fetches a good copy
			}
		}
		return buf, err
	}
	lo, hi := nonZero(data)
	if err := to.st.Create(s.ctx, oid, size, int64(lo), data[lo:hi], true); err != nil {
		if isDiskFault(err) {
			s.fail(to, err)
		}
		return buf, fmt.Errorf("copy to %s: %w", to.path, err)
	}
	if err := from.st.Remove(s.ctx, oid); err != nil && !errors.Is(err, proto.ResNoObj) {
		// Two copies now: the ring disk's is found first, and the next
		// pass removes this one.
		return buf, fmt.Errorf("remove the moved copy: %w", err)
	}
	return buf, nil
}

// nonZero returns the smallest [lo, hi) outside which b is all zeros, so
// that a moved object's leading and trailing zeros stay holes.
func nonZero(b []byte) (lo, hi int) {
	for lo < len(b) && b[lo] == 0 {
		lo++
	}
	hi = len(b)
	for hi > lo && b[hi-1] == 0 {
		hi--
	}
	return lo, hi
}
