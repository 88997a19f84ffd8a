package volume

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// memObjects is an in-memory ObjectIO with the gateway's semantics: a
// created object is full-size and zero-filled (a second create replaces
// it), reads and writes of a missing object answer NO_OBJ, and data
// objects of a snapshot vid are READONLY. Objects are held sparse: only
// the prefix up to the last byte written, the rest reads as zeros.
type memObjects struct {
	shift uint8

	mu       sync.Mutex
	objs     map[uint64][]byte
	readonly map[uint32]bool // snapshot vids
	creates  map[uint64]int  // CreateAndWrite calls per oid
	removes  map[uint64]int
	reads    map[uint64]int
	flags    []uint16 // flags of every write and create
	failNext map[string]error

	// createDelay widens the window between a create being decided and
	// landing, so that missing serialisation shows up as lost writes.
	createDelay time.Duration
}

func newMemObjects(shift uint8) *memObjects {
	return &memObjects{shift: shift, objs: map[uint64][]byte{}, readonly: map[uint32]bool{},
		creates: map[uint64]int{}, removes: map[uint64]int{}, reads: map[uint64]int{}, failNext: map[string]error{}}
}

func (m *memObjects) size(oid uint64) int64 { return proto.ObjectSize(oid, m.shift) }

func (m *memObjects) check(op string, oid uint64, off int64, n int) error {
	if off < 0 || off+int64(n) > m.size(oid) {
		return fmt.Errorf("%s %016x: [%d,+%d) outside %d: %w", op, oid, off, n, m.size(oid), proto.ResInvalidParms)
	}
	if err := m.failNext[op]; err != nil {
		delete(m.failNext, op)
		return err
	}
	return nil
}

// fail makes the next call of op ("read", "write", "create", "remove",
// "write-inode") fail with err.
func (m *memObjects) fail(op string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failNext[op] = err
}

func (m *memObjects) writable(oid uint64) error {
	if proto.IsDataObj(oid) && m.readonly[proto.OidToVid(oid)] {
		return fmt.Errorf("%016x: %w", oid, proto.ResReadonly)
	}
	return nil
}

func (m *memObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check("read", oid, off, len(buf)); err != nil {
		return err
	}
	m.reads[oid]++
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("read %016x: %w", oid, proto.ResNoObj)
	}
	clear(buf)
	if off < int64(len(o)) {
		copy(buf, o[off:])
	}
	return nil
}

func (m *memObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := "write"
	if proto.IsVdiObj(oid) {
		op = "write-inode"
	}
	if err := m.check(op, oid, off, len(data)); err != nil {
		return err
	}
	if err := m.writable(oid); err != nil {
		return err
	}
	o, ok := m.objs[oid]
	if !ok {
		return fmt.Errorf("write %016x: %w", oid, proto.ResNoObj)
	}
	m.flags = append(m.flags, flags)
	m.objs[oid] = put(o, off, data)
	return nil
}

func (m *memObjects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	m.mu.Lock()
	if err := m.check("create", oid, off, len(data)); err != nil {
		m.mu.Unlock()
		return err
	}
	if err := m.writable(oid); err != nil {
		m.mu.Unlock()
		return err
	}
	o := []byte{}
	if cowFrom != 0 {
		src, ok := m.objs[cowFrom]
		if !ok {
			m.mu.Unlock()
			return fmt.Errorf("cow from %016x: %w", cowFrom, proto.ResNoObj)
		}
		o = slices.Clone(src)
	}
	o = put(o, off, slices.Clone(data))
	m.creates[oid]++
	m.flags = append(m.flags, flags)
	delay := m.createDelay
	m.mu.Unlock()

	time.Sleep(delay)

	m.mu.Lock()
	m.objs[oid] = o
	m.mu.Unlock()
	return nil
}

func (m *memObjects) RemoveObject(ctx context.Context, oid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check("remove", oid, 0, 0); err != nil {
		return err
	}
	if _, ok := m.objs[oid]; !ok {
		return fmt.Errorf("remove %016x: %w", oid, proto.ResNoObj)
	}
	m.removes[oid]++
	delete(m.objs, oid)
	return nil
}

func (m *memObjects) Flush(ctx context.Context) error { return ctx.Err() }

// put writes data at off into the sparse object o, growing it as needed.
func put(o []byte, off int64, data []byte) []byte {
	if end := off + int64(len(data)); end > int64(len(o)) {
		o = append(o, make([]byte, end-int64(len(o)))...)
	}
	copy(o[off:], data)
	return o
}

// object returns the full contents of oid, or nil when it does not exist.
func (m *memObjects) object(oid uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[oid]
	if !ok {
		return nil
	}
	full := make([]byte, m.size(oid))
	copy(full, o)
	return full
}

func (m *memObjects) count(c map[uint64]int, oid uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return c[oid]
}
