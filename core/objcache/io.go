package objcache

import (
	"context"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
)

// Reads and writes: the object interface core/volume and core/server
// call.

// ReadObject fills buf from oid at off: valid blocks from the cache, the
// rest from the backend (zeros for an object created in the cache).
func (c *Cache) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	e := c.lookup(oid)
	if e == nil {
		return c.cfg.Backend.ReadObject(ctx, oid, off, buf)
	}
	defer c.release(e)
	if off < 0 || off+int64(len(buf)) > e.size {
		return fmt.Errorf("object %016x: range [%d,+%d) outside %d bytes: %w", oid, off, len(buf), e.size, proto.ResInvalidParms)
	}
	lo, hi := blocks(off, len(buf))
	e.mu.Lock()
	all := e.countInvalid(lo, hi) == 0
	created := e.created
	e.mu.Unlock()
	if all {
		_, err := e.f.ReadAt(buf, off)
		return err
	}
	if created {
		clear(buf)
	} else if err := c.cfg.Backend.ReadObject(ctx, oid, off, buf); err != nil {
		return err
	}
	// Lay the valid blocks over what the replicas hold.
	e.mu.Lock()
	defer e.mu.Unlock()
	end := off + int64(len(buf))
	for i := lo; i < hi; {
		if !bit(e.valid, i) {
			i++
			continue
		}
		j := i
		for j < hi && bit(e.valid, j) {
			j++
		}
		s, t := max(int64(i)*BlockSize, off), min(int64(j)*BlockSize, end)
		if _, err := e.f.ReadAt(buf[s-off:t-off], s); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// WriteObject writes data into oid at off: into the cache with
// proto.FlagCmdCache (stable after the next Flush), through to the
// replicas otherwise.
func (c *Cache) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	return c.write(ctx, oid, 0, off, data, flags, false)
}

// CreateAndWrite creates oid with data at off. A write-back create of an
// object the cache does not hold makes it in the cache only ("create at
// push"); a copy-on-write create always goes to the replicas, synced (a
// copy is stable before an entry names it).
func (c *Cache) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	return c.write(ctx, oid, cowFrom, off, data, flags, true)
}

func (c *Cache) write(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16, create bool) error {
	if cowFrom != 0 {
		if e := c.lookup(oid); e != nil {
			// The copy replaces the object: what the cache holds of it is
			// pushed first and then forgotten.
			err := c.push(ctx, e)
			c.mu.Lock()
			c.removeLocked(e)
			c.mu.Unlock()
			c.release(e)
			if err != nil {
				return err
			}
		}
		return c.cfg.Backend.CreateAndWrite(ctx, oid, cowFrom, off, data, flags&^proto.FlagCmdCache)
	}
	if !cacheableOid(oid) || !writeBack(flags) || create && len(data) == 0 {
		return c.writeThrough(ctx, c.lookup(oid), oid, off, data, flags, create)
	}
	size, ok, err := c.cfg.Describe(ctx, oid)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(data)) > size {
		return fmt.Errorf("object %016x: range [%d,+%d) outside %d bytes: %w", oid, off, len(data), size, proto.ResInvalidParms)
	}
	if !ok {
		return c.writeThrough(ctx, c.lookup(oid), oid, off, data, flags, create)
	}
	e, err := c.acquire(ctx, oid, size, create)
	if err != nil {
		return err
	}
	if e == nil {
		return c.createThrough(ctx, oid, off, data, flags, create)
	}
	if done, err := c.writeEntry(ctx, e, off, data); !done {
		return c.writeThrough(ctx, e, oid, off, data, flags, create)
	} else if err != nil {
		c.release(e)
		return err
	}
	c.release(e)
	if c.dirty.Load() > c.cfg.Size/2 {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

func (e *entry) isCreated() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.created
}

// writeEntry writes data at off into e's file and marks it dirty. done is
// false when there was no room (nothing was written).
func (c *Cache) writeEntry(ctx context.Context, e *entry, off int64, data []byte) (done bool, err error) {
	lo, hi := blocks(off, len(data))
	end := off + int64(len(data))
	e.mu.Lock()
	need := e.countInvalid(lo, hi)
	e.mu.Unlock()
	if need > 0 && !c.reserve(ctx, int64(need)*BlockSize) {
		return false, nil
	}
	charged := need
	// Partial blocks at either end that the cache does not hold yet are
	// filled with the object's bytes first.
	if off%BlockSize != 0 {
		if err := c.fill(ctx, e, lo, &charged); err != nil {
			c.unreserve(int64(charged) * BlockSize)
			return true, err
		}
	}
	if end%BlockSize != 0 && (hi-1 != lo || off%BlockSize == 0) {
		if err := c.fill(ctx, e, hi-1, &charged); err != nil {
			c.unreserve(int64(charged) * BlockSize)
			return true, err
		}
	}
	e.rw.RLock()
	_, err = e.f.WriteAt(data, off)
	if err != nil {
		e.rw.RUnlock()
		c.unreserve(int64(charged) * BlockSize)
		return true, fmt.Errorf("object cache: %w", err)
	}
	e.mu.Lock()
	newDirty := 0
	for i := lo; i < hi; i++ {
		if !bit(e.valid, i) {
			set(e.valid, i)
			e.nvalid++
			charged--
		}
		if !bit(e.dirty, i) {
			set(e.dirty, i)
			e.ndirty++
			newDirty++
		}
	}
	e.mu.Unlock()
	e.rw.RUnlock()
	c.dirty.Add(int64(newDirty) * BlockSize)
	if charged != 0 {
		// Another write made some of the blocks valid meanwhile.
		c.unreserve(int64(charged) * BlockSize)
	}
	return true, nil
}

// fill makes block i of e valid with the object's bytes (zeros for an
// object created in the cache), if it is not yet; *charged counts the
// reserved blocks not yet made valid.
func (c *Cache) fill(ctx context.Context, e *entry, i int, charged *int) error {
	e.rw.Lock()
	defer e.rw.Unlock()
	e.mu.Lock()
	valid, created := bit(e.valid, i), e.created
	e.mu.Unlock()
	if valid {
		return nil
	}
	s := int64(i) * BlockSize
	n := min(int64(BlockSize), e.size-s)
	bp := bufpool.Get(int(n))
	defer bufpool.Put(bp)
	b := *bp
	if created {
		clear(b)
	} else if err := c.cfg.Backend.ReadObject(ctx, e.oid, s, b); err != nil {
		return err
	}
	if _, err := e.f.WriteAt(b, s); err != nil {
		return fmt.Errorf("object cache: %w", err)
	}
	e.mu.Lock()
	set(e.valid, i)
	e.nvalid++
	e.mu.Unlock()
	*charged--
	return nil
}

// createThrough is writeThrough for an object the cache has no room
// for. A create holds oid's makeMu, so that no entry is made for it,
// believing it missing, while it is created.
func (c *Cache) createThrough(ctx context.Context, oid uint64, off int64, data []byte, flags uint16, create bool) error {
	if create {
		mu := &c.makeMu[oid%makeStripes]
		mu.Lock()
		defer mu.Unlock()
	}
	return c.writeThrough(ctx, c.lookup(oid), oid, off, data, flags, create)
}

// writeThrough writes to the replicas (with the caller's flags) and keeps
// what e holds current: blocks it holds are rewritten in the cache too,
// and marked dirty, so that a push already under way is followed by one
// with these bytes. e, if not nil, is pinned and released here.
func (c *Cache) writeThrough(ctx context.Context, e *entry, oid uint64, off int64, data []byte, flags uint16, create bool) error {
	if e == nil {
		if create {
			return c.cfg.Backend.CreateAndWrite(ctx, oid, 0, off, data, flags)
		}
		return c.cfg.Backend.WriteObject(ctx, oid, off, data, flags)
	}
	defer c.release(e)
	if off < 0 || off+int64(len(data)) > e.size {
		return fmt.Errorf("object %016x: range [%d,+%d) outside %d bytes: %w", oid, off, len(data), e.size, proto.ResInvalidParms)
	}
	lo, hi := blocks(off, len(data))
	end := off + int64(len(data))
	e.rw.RLock()
	e.mu.Lock()
	newDirty := 0
	for i := lo; i < hi; i++ {
		if !bit(e.valid, i) {
			continue
		}
		s, t := max(int64(i)*BlockSize, off), min(int64(i+1)*BlockSize, end)
		if _, err := e.f.WriteAt(data[s-off:t-off], s); err != nil {
			e.mu.Unlock()
			e.rw.RUnlock()
			return fmt.Errorf("object cache: %w", err)
		}
		if !bit(e.dirty, i) {
			set(e.dirty, i)
			e.ndirty++
			newDirty++
		}
	}
	created := e.created
	e.mu.Unlock()
	e.rw.RUnlock()
	c.dirty.Add(int64(newDirty) * BlockSize)
	if created || create {
		// A push of an object created in the cache sends zeros for the
		// blocks the cache does not hold: it must not run alongside.
		e.pushMu.Lock()
		defer e.pushMu.Unlock()
		// The replicas may not have the object yet. Once they do, the
		// blocks the cache does not hold are theirs, no longer zeros.
		if err := c.cfg.Backend.CreateAndWrite(ctx, oid, 0, off, data, flags); err != nil {
			return err
		}
		e.mu.Lock()
		e.created = false
		e.mu.Unlock()
		return nil
	}
	return c.cfg.Backend.WriteObject(ctx, oid, off, data, flags)
}

// RemoveObject removes oid from the replicas and forgets what the cache
// holds of it (dirty blocks included).
func (c *Cache) RemoveObject(ctx context.Context, oid uint64) error {
	created := false
	if e := c.lookup(oid); e != nil {
		e.pushMu.Lock() // not while a push of it is on its way
		created = e.isCreated()
		c.mu.Lock()
		c.removeLocked(e)
		c.mu.Unlock()
		e.pushMu.Unlock()
		c.release(e)
	}
	err := c.cfg.Backend.RemoveObject(ctx, oid)
	if created && errors.Is(err, proto.ResNoObj) {
		return nil // it only ever lived in the cache
	}
	return err
}
