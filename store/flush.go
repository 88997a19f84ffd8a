package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Write-back (docs/design.md §7 "Durability"). A WriteAt, Create or Punch without
// sync leaves its data in the page cache and records the object in the
// dirty set; Flush later syncs exactly the objects in it. This is how a
// disk with a write cache behaves: a write is stable after the next flush,
// and a flush costs one sync per object written since the last one, not
// one per write.
//
// Invariants:
//   - an object is added to the dirty set after its unsynced change has
//     been made (never before), so a flush that takes it out of the set
//     syncs after the change and covers it;
//   - Flush returns only after a flush pass that began after Flush was
//     called has finished (flushGroup, the same group commit as syncGroup),
//     so every unsynced change that returned before Flush was called is
//     covered, even when another flush pass was already running;
//   - a pass that fails to sync an object reports the failure to every
//     Flush it covers. The object is not put back: after a failed fsync the
//     kernel may have dropped the dirty pages, and a second fsync would
//     report a success it cannot vouch for.
//
// A removed object, or one moved to .stale, leaves the set: there is
// nothing left to sync under its name (a stale copy is superseded by the
// copies recovery wrote, synced, elsewhere).

// flushWorkers bounds the objects one flush pass syncs at once. Concurrent
// fsyncs on one filesystem share journal commits, so a few in parallel
// cost about as much as one.
const flushWorkers = 16

// oidSet is a set of object ids, safe for concurrent use.
type oidSet struct {
	mu sync.Mutex
	m  map[uint64]struct{}
}

func (d *oidSet) add(oid uint64) {
	d.mu.Lock()
	if d.m == nil {
		d.m = make(map[uint64]struct{})
	}
	d.m[oid] = struct{}{}
	d.mu.Unlock()
}

func (d *oidSet) remove(oid uint64) {
	d.mu.Lock()
	delete(d.m, oid)
	d.mu.Unlock()
}

// take empties the set and returns what it held.
func (d *oidSet) take() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	oids := make([]uint64, 0, len(d.m))
	for oid := range d.m {
		oids = append(oids, oid)
	}
	clear(d.m)
	return oids
}

func (d *oidSet) has(oid uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.m[oid]
	return ok
}

func (d *oidSet) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

// Stats are counters of the store's durability work since Open.
type Stats struct {
	// Syncs is the number of fsync/fdatasync calls made on object files
	// to put their data on stable storage (a group commit shared by
	// several writes counts once).
	Syncs uint64
	// Marks is the number of fsyncs that made an object's unflushed flag
	// durable: one for the first write without sync to an object after
	// each flush of it (checksum.go).
	Marks uint64
	// Flushes is the number of flush passes run (Flush calls that found a
	// pass already covering them do not add one).
	Flushes uint64
	// FlushedObjects is the number of objects those passes synced.
	FlushedObjects uint64
	// Dirty is the number of objects changed without sync and not yet
	// flushed.
	Dirty int
	// ChecksumFailures counts reads refused because a chunk (or the
	// checksum attribute) failed its check; RepairedChunks counts chunks
	// Repair rewrote from a good copy.
	ChecksumFailures, RepairedChunks uint64
	// DirectWrites is the number of writes made with O_DIRECT
	// (Config.Direct).
	DirectWrites uint64
}

// stats are the counters behind Stats.
type stats struct {
	syncs, marks, flushes, flushed atomic.Uint64
	checksumFailures, repaired     atomic.Uint64
	readBacks                      atomic.Uint64 // pages updateSums read (written.go)
	directWrites                   atomic.Uint64 // writes made with O_DIRECT (direct.go)
}

// Stats returns the durability counters.
func (s *Store) Stats() Stats {
	return Stats{
		Syncs:            s.stats.syncs.Load(),
		Marks:            s.stats.marks.Load(),
		Flushes:          s.stats.flushes.Load(),
		FlushedObjects:   s.stats.flushed.Load(),
		Dirty:            s.dirty.len(),
		ChecksumFailures: s.stats.checksumFailures.Load(),
		RepairedChunks:   s.stats.repaired.Load(),
		DirectWrites:     s.stats.directWrites.Load(),
	}
}

// Flush puts on stable storage every change made without sync that
// returned before Flush was called: it syncs the objects in the dirty set,
// in parallel, and the object directory when a Create without sync renamed
// an object into it. Writes made with sync need no flush. The error is
// EIO (or NO_SPACE) naming an object that could not be synced; a flush
// never reports success for a change it did not make stable.
func (s *Store) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	return s.flushGroup.do(s.flushPass)
}

// flushPass syncs the objects of the dirty set as it is when the pass
// begins, and the directory.
func (s *Store) flushPass() error {
	s.stats.flushes.Add(1)
	oids := s.dirty.take()
	if len(oids) == 0 {
		if s.dirDirty.Load() {
			if err := s.syncDir(); err != nil {
				return fmt.Errorf("store: flush: %w: %w", proto.ResEIO, err)
			}
		}
		return nil
	}
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range min(flushWorkers, len(oids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(oids) {
					return
				}
				if err := s.flushObject(oids[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	s.stats.flushed.Add(uint64(len(oids)))
	if first != nil {
		s.log.Error("flush failed", "objects", len(oids), "err", first)
		return first
	}
	s.log.Debug("flushed", "objects", len(oids), "syncs_total", s.stats.syncs.Load())
	return nil
}

// syncFile runs sync, an fsync or fdatasync of object oid's file, through
// the test hook when one is set.
func (s *Store) syncFile(oid uint64, mark bool, sync func() error) error {
	if s.syncHook != nil {
		if err := s.syncHook(oid, mark); err != nil {
			return err
		}
	}
	return ignoringEINTR(sync)
}

// flushObject syncs object oid for a flush pass. An object that is gone
// (removed, or moved to .stale, since it was written) has nothing to sync.
func (s *Store) flushObject(oid uint64) error {
	h, err := s.files.acquire(oid)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return openError("flush", oid, err)
	}
	defer s.files.release(h)
	var gen uint64
	if h.sums != nil {
		h.mu.RLock()
		gen = h.unflushedGen
		h.mu.RUnlock()
	}
	if err := s.syncHandle(h); err != nil {
		return ioError("flush", oid, err)
	}
	if h.sums != nil {
		s.clearUnflushed(h, gen)
	}
	return nil
}
