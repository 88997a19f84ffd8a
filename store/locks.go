package store

import (
	"sync"

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
type Locks struct{ m [256]sync.RWMutex }

// Lock locks oid's stripe for a change that must run alone.
func (l *Locks) Lock(oid uint64) { l.m[proto.HashOid(oid)%256].Lock() }

// Unlock unlocks oid's stripe.
func (l *Locks) Unlock(oid uint64) { l.m[proto.HashOid(oid)%256].Unlock() }

// RLock locks oid's stripe for a write or punch of part of the object.
func (l *Locks) RLock(oid uint64) { l.m[proto.HashOid(oid)%256].RLock() }

// RUnlock unlocks what RLock locked.
func (l *Locks) RUnlock(oid uint64) { l.m[proto.HashOid(oid)%256].RUnlock() }
