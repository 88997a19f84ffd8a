package store

import (
	"sync"
	"sync/atomic"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Locks serialise the writers of one object that must not interleave:
// recovery copying an object in, creates, removes and repairs (Lock), and
// writes arriving for it, so that a recovered (older) copy never lands on
// top of a newer write. Writes and punches of part of an object take
// RLock: they may run together, as the store orders each one with its
// checksums itself (handle.mu), and a synced one holds its lock across
// its sync, which concurrent synced writes then share (group commit).
// Objects are striped over 256 locks.
//
// Each stripe also counts its releases, shared and exclusive (Gen), so
// that a copy read from a peer without the lock can be checked, once the
// lock is taken, against every writer that came and went meanwhile: no
// lock need be held across a peer read.
type Locks struct {
	m   [256]sync.RWMutex
	gen [256]atomic.Uint64
}

func stripe(oid uint64) uint64 { return proto.HashOid(oid) % 256 }

// Lock locks oid's stripe for a change that must run alone.
func (l *Locks) Lock(oid uint64) { l.m[stripe(oid)].Lock() }

// Unlock unlocks oid's stripe.
func (l *Locks) Unlock(oid uint64) {
	i := stripe(oid)
	l.gen[i].Add(1)
	l.m[i].Unlock()
}

// RLock locks oid's stripe for a write or punch of part of the object.
func (l *Locks) RLock(oid uint64) { l.m[stripe(oid)].RLock() }

// RUnlock unlocks what RLock locked. It counts as a release for Gen: a
// write went by.
func (l *Locks) RUnlock(oid uint64) {
	i := stripe(oid)
	l.gen[i].Add(1)
	l.m[i].RUnlock()
}

// Gen returns the number of releases of oid's stripe so far. Read it
// before a lock-free read of oid elsewhere; if, with the lock then held,
// Gen returns the same value, no writer of any object of the stripe
// released it meanwhile, so none changed oid here since.
func (l *Locks) Gen(oid uint64) uint64 { return l.gen[stripe(oid)].Load() }

// LockFreeReads is how many times LockAfter runs its read without the
// lock before it runs it holding the lock.
const LockFreeReads = 3

// LockAfter runs read, I/O that needs no lock here (reading a copy from a
// peer, with its retries), and then returns holding oid's lock
// (exclusive), the read still valid: if a writer of oid's stripe released
// its lock while read ran, the read may predate a change made here, and it
// runs again. After LockFreeReads such tries it runs with the lock held,
// so that a steady stream of writers cannot starve it. On error the lock
// is not held.
//
// This keeps the stripe (1/256 of all objects) free during slow reads: no
// writer waits behind a peer read.
func (l *Locks) LockAfter(oid uint64, read func() error) error {
	for try := 0; try < LockFreeReads; try++ {
		gen := l.Gen(oid)
		if err := read(); err != nil {
			return err
		}
		l.Lock(oid)
		if l.Gen(oid) == gen {
			return nil
		}
		l.Unlock(oid)
	}
	l.Lock(oid)
	if err := read(); err != nil {
		l.Unlock(oid)
		return err
	}
	return nil
}
