package vdi

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// memObjects is an in-memory object store with the semantics vdi relies
// on: a created object is full-size and zero-filled, a second create
// replaces it, reads and writes of a missing object answer NO_OBJ.
//
// Objects are kept sparse: only the prefix up to the last byte written is
// held, the rest reads as zeros (a 12.5 MB inode costs a few KB).
type memObjects struct {
	shift uint8 // block size shift of data objects

	mu   sync.Mutex
	objs map[uint64][]byte
	// failCreate, if set, fails the creates it returns an error for (a
	// full store, say).
	failCreate func(oid uint64) error
	decrefs    int // ledger drops applied (Decref calls)
}

func newMemObjects(shift uint8) *memObjects {
	return &memObjects{shift: shift, objs: map[uint64][]byte{}}
}

func (m *memObjects) size(oid uint64) int64 { return proto.ObjectSize(oid, m.shift) }

func (m *memObjects) check(oid uint64, off int64, n int) error {
	if off < 0 || off+int64(n) > m.size(oid) {
		return fmt.Errorf("object %016x: [%d,+%d) outside %d: %w", oid, off, n, m.size(oid), proto.ResInvalidParms)
	}
	return nil
}

func (m *memObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	if err := m.check(oid, off, len(buf)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("read %016x: %w", oid, proto.ResNoObj)
	}
	n := 0
	if off < int64(len(o)) {
		n = copy(buf, o[off:])
	}
	// Only the bytes past the held prefix: under the race detector every
	// byte cleared or copied costs, and inodes are 12.5 MB.
	clear(buf[n:])
	return nil
}

func (m *memObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if err := m.check(oid, off, len(data)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("write %016x: %w", oid, proto.ResNoObj)
	}
	m.objs[oid] = put(o, off, data)
	return nil
}

func (m *memObjects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	if err := m.check(oid, off, len(data)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failCreate != nil {
		if err := m.failCreate(oid); err != nil {
			return err
		}
	}
	o := []byte{}
	if cowFrom != 0 {
		src, ok := m.objs[cowFrom]
		if !ok {
			return fmt.Errorf("cow from %016x: %w", cowFrom, proto.ResNoObj)
		}
		o = slices.Clone(src)
	}
	m.objs[oid] = put(o, off, data)
	return nil
}

// put writes data at off into the sparse object o, growing it as needed.
func put(o []byte, off int64, data []byte) []byte {
	if end := off + int64(len(data)); end > int64(len(o)) {
		o = append(o, make([]byte, end-int64(len(o)))...)
	}
	copy(o[off:], data)
	return o
}

func (m *memObjects) RemoveObject(ctx context.Context, oid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[oid]; !ok {
		return fmt.Errorf("remove %016x: %w", oid, proto.ResNoObj)
	}
	delete(m.objs, oid)
	return nil
}

func (m *memObjects) has(oid uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objs[oid]
	return ok
}

// dataOids lists the data objects held, sorted.
func (m *memObjects) dataOids() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for oid := range m.objs {
		if proto.IsDataObj(oid) {
			out = append(out, oid)
		}
	}
	slices.Sort(out)
	return out
}

// Decref applies a drop to the one copy of a ledger, as a replica does
// (gateway.ApplyDecref).
func (m *memObjects) Decref(ctx context.Context, ledgerOid uint64, gen, count uint32) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.decrefs++
	l := make([]byte, proto.LedgerSize)
	o, ok := m.objs[ledgerOid]
	copy(l, o)
	zero, _, hi, err := proto.LedgerDecref(l, !ok, gen, count)
	if err != nil {
		return false, err
	}
	if zero {
		delete(m.objs, ledgerOid)
		return true, nil
	}
	m.objs[ledgerOid] = l[:max(len(o), hi)]
	return false, nil
}

// ledgerOids lists the ledger objects held, sorted.
func (m *memObjects) ledgerOids() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for oid := range m.objs {
		if proto.IsLedgerObj(oid) && !proto.IsVdiObj(oid) {
			out = append(out, oid)
		}
	}
	slices.Sort(out)
	return out
}
