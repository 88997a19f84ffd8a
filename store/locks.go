package store

import (
	"sync"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Locks serialise the writers of one object that must not interleave:
// recovery copying an object in, and writes arriving for it, so that a
// recovered (older) copy never lands on top of a newer write. Objects are
// striped over 256 mutexes.
type Locks struct{ m [256]sync.Mutex }

// Lock locks oid's stripe.
func (l *Locks) Lock(oid uint64) { l.m[proto.HashOid(oid)%256].Lock() }

// Unlock unlocks oid's stripe.
func (l *Locks) Unlock(oid uint64) { l.m[proto.HashOid(oid)%256].Unlock() }
