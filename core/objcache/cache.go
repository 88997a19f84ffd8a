// Package objcache is the object cache (docs/protocol.md §6): a bounded
// write-back cache of the objects of the VDIs written through this node,
// on its local disk. It sits between the front-ends (core/server's native
// handlers, core/volume for NBD) and the replicated object layer
// (core/gateway), and implements the same object interface, so no
// front-end learns about it.
//
// A write with proto.FlagCmdCache (and not proto.FlagCmdDirect) to a data
// object or an inode lands in the cache file of its object and is
// acknowledged once there; the replicas do not change. Flush (and
// FlushVdi, the native FLUSH_VDI) pushes every dirty part to every copy
// and syncs them before it returns. Any other write goes to the replicas
// as well (write-through) and keeps a cached copy current.
//
// Granularity: a cache file holds the whole object's range (sparse); which
// 4 KiB blocks of it hold the object's current bytes (valid) and which of
// those the replicas lack (dirty) are bitmaps. Reads are served from the
// cache where their blocks are valid and from the replicas elsewhere
// (a read miss does not fill the cache: the cache is for writes; reads of
// uncached objects cost what they cost without it). A write that covers a
// block only in part fills that block from the replicas first.
//
// Bounds: the bytes of valid blocks (plus a small charge per cache file)
// never pass Config.Size. Past three quarters of it, dirty objects are
// pushed in the background, oldest first; a write that finds no room
// evicts clean objects (least recently used first), then pushes dirty
// ones itself, and only when none can be pushed goes through to the
// replicas instead of the cache.
//
// After a crash nothing in the cache dir is trusted: Open empties it. The
// dirty blocks it held were acknowledged but never promised stable (a
// disk's write cache); pushing them later could overwrite what was
// written through another node since (the VDI reopened elsewhere), and a
// torn block could not be told from a good one without a checksum on
// every write. So a restarted sheep serves the VDI as of its last flush.
package objcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// BlockSize is the cache's unit of validity and dirtiness.
const BlockSize = 4096

const makeStripes = 64

// entryCharge is what a cache file costs besides its valid blocks: its
// inode and extent blocks on the file system.
const entryCharge = 2 * BlockSize

// Backend is the object layer the cache pushes to and reads misses from
// (core/gateway, with inode table writes routed through core/vdi).
type Backend interface {
	ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error
	WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error
	RemoveObject(ctx context.Context, oid uint64) error
	// Flush makes every write-back write sent so far stable on every copy.
	Flush(ctx context.Context) error
}

// Describe tells the cache about oid before a write: its size, and
// whether a write-back write to it may be held in the cache (false: it
// goes through, as for a snapshot's inode, whose table writes the
// replicas must judge). An error (READONLY for a snapshot's data) fails
// the write.
type Describe func(ctx context.Context, oid uint64) (size int64, cacheable bool, err error)

// Config is what a Cache needs.
type Config struct {
	Dir      string // the cache files; emptied by Open
	Size     int64  // the bound on the bytes the cache holds on disk
	DirectIO bool   // Sheepdog's directio option, reported by Info
	Backend  Backend
	Describe Describe
	Log      *slog.Logger
}

// Cache is the object cache of one sheep. It is safe for concurrent use.
type Cache struct {
	cfg Config

	mu      sync.Mutex
	entries map[uint64]*entry
	vdis    map[uint32]map[uint64]*entry
	lru     list.List // of *entry, most recently used first
	used    int64     // bytes charged: valid blocks plus entryCharge per entry

	// makeMu: an entry is made (the replicas probed for the object, the
	// entry inserted) under its oid's stripe, and so is a create that
	// goes through for want of room: an entry never holds an object
	// created on the replicas as zeros.
	makeMu [makeStripes]sync.Mutex

	dirty  atomic.Int64 // bytes of dirty blocks
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	pushes atomic.Uint64 // background pushes, for tests and Info
}

// entry is one cached object.
//
// Invariants: valid and dirty have one bit per block; dirty ⊆ valid; a
// valid block of the file holds the object's current bytes; a block is
// dirty from the write that changed it until a push that read it after
// that write succeeded. created: the replicas have no such object yet (it
// was created in the cache); its invalid blocks are zeros.
type entry struct {
	oid  uint64
	size int64
	path string
	f    *os.File
	elem *list.Element

	// rw: writes hold it shared across their file write and bitmap
	// update; a fill of a partial block holds it exclusive, so that it
	// never writes old bytes over a block a write made valid meanwhile.
	rw sync.RWMutex
	// pushMu orders the pushes of the entry: one at a time, so that an
	// older push never lands after a newer one.
	pushMu sync.Mutex

	mu      sync.Mutex // guards the fields below
	valid   []uint64
	dirty   []uint64
	nvalid  int
	ndirty  int
	created bool

	// guarded by Cache.mu
	pins    int
	dropped bool
}

// Open empties dir (see the package comment) and returns the cache.
func Open(cfg Config) (*Cache, error) {
	if cfg.Size <= 0 {
		return nil, fmt.Errorf("object cache size %d: must be positive", cfg.Size)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 {
		cfg.Log.Warn("object cache: dropping what the cache dir held (written before the last start, never flushed)", "dir", cfg.Dir, "vdis", len(ents))
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(cfg.Dir, e.Name())); err != nil {
				return nil, fmt.Errorf("empty object cache dir: %w", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("object cache dir: %w", err)
	}
	c := &Cache{
		cfg: cfg, entries: map[uint64]*entry{}, vdis: map[uint32]map[uint64]*entry{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go c.pusher()
	return c, nil
}

// Close stops the background pusher and closes the cache files. Dirty
// blocks are not pushed: Flush first.
func (c *Cache) Close() {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		e.f.Close()
	}
}

// cacheableOid: the objects the cache holds, as Sheepdog's did: data
// objects and inodes (vmstate, attribute and ledger objects go through).
func cacheableOid(oid uint64) bool { return proto.IsDataObj(oid) || proto.IsVdiObj(oid) }

func writeBack(flags uint16) bool {
	return flags&proto.FlagCmdCache != 0 && flags&proto.FlagCmdDirect == 0
}

// lookup returns the entry of oid pinned, or nil.
func (c *Cache) lookup(oid uint64) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[oid]
	if e != nil {
		e.pins++
		c.lru.MoveToFront(e.elem)
	}
	return e
}

// release unpins e; the last release of a dropped entry closes its file.
func (c *Cache) release(e *entry) {
	c.mu.Lock()
	e.pins--
	closeIt := e.pins == 0 && e.dropped
	c.mu.Unlock()
	if closeIt {
		e.f.Close()
	}
}

// acquire returns the entry of oid pinned, making one if there is none
// and room for its charge (nil when there is no room): created when the
// caller creates the object and the replicas do not have it.
func (c *Cache) acquire(ctx context.Context, oid uint64, size int64, created bool) (*entry, error) {
	if e := c.lookup(oid); e != nil {
		return e, nil
	}
	// The probe and the insertion are one step for oid (see makeMu).
	mu := &c.makeMu[oid%makeStripes]
	mu.Lock()
	defer mu.Unlock()
	if e := c.lookup(oid); e != nil {
		return e, nil
	}
	// Whether the replicas have the object decides what its blocks are
	// before the cache holds them: theirs, or zeros (created here). A
	// plain write to a missing object fails now, as it would there.
	var probe [1]byte
	switch err := c.cfg.Backend.ReadObject(ctx, oid, 0, probe[:]); {
	case err == nil:
		created = false
	case errors.Is(err, proto.ResNoObj) && created:
	default:
		return nil, err
	}
	if !c.reserve(ctx, entryCharge) {
		return nil, nil
	}
	vid := proto.OidToVid(oid)
	dir := filepath.Join(c.cfg.Dir, fmt.Sprintf("%06x", vid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.unreserve(entryCharge)
		return nil, fmt.Errorf("object cache: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%016x", oid))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err == nil {
		if err = f.Truncate(size); err != nil {
			f.Close()
		}
	}
	if err != nil {
		c.unreserve(entryCharge)
		return nil, fmt.Errorf("object cache: %w", err)
	}
	n := int((size + BlockSize - 1) / BlockSize)
	words := (n + 63) / 64
	e := &entry{oid: oid, size: size, path: path, f: f, valid: make([]uint64, words), dirty: make([]uint64, words), created: created, pins: 1}
	c.mu.Lock()
	c.entries[oid] = e
	m := c.vdis[vid]
	if m == nil {
		m = map[uint64]*entry{}
		c.vdis[vid] = m
	}
	m[oid] = e
	e.elem = c.lru.PushFront(e)
	c.mu.Unlock()
	return e, nil
}

// reserve charges n bytes, evicting clean entries and pushing dirty ones
// to make room; false when it cannot.
func (c *Cache) reserve(ctx context.Context, n int64) bool {
	for tries := 0; ; tries++ {
		c.mu.Lock()
		if c.used+n <= c.cfg.Size {
			c.used += n
			c.mu.Unlock()
			return true
		}
		victim := c.evictLocked(n)
		c.mu.Unlock()
		if victim == nil || tries >= 8 || ctx.Err() != nil {
			return false
		}
		// Nothing clean to evict: push the oldest dirty object so that it
		// can be evicted on the next round.
		if err := c.push(ctx, victim); err != nil {
			c.cfg.Log.Warn("object cache: push to make room failed", "oid", fmt.Sprintf("%016x", victim.oid), "err", err)
		}
		c.release(victim)
	}
}

func (c *Cache) unreserve(n int64) {
	c.mu.Lock()
	c.used -= n
	c.mu.Unlock()
}

// evictLocked evicts clean, unpinned entries from the LRU end until n
// bytes fit. When they do not, it returns the least recently used dirty
// entry, pinned, for the caller to push (nil if there is none).
func (c *Cache) evictLocked(n int64) *entry {
	var dirty *entry
	for el := c.lru.Back(); el != nil && c.used+n > c.cfg.Size; {
		e := el.Value.(*entry)
		prev := el.Prev()
		if e.pins == 0 {
			e.mu.Lock()
			clean := e.ndirty == 0 && !e.created
			e.mu.Unlock()
			if clean {
				c.removeLocked(e)
			} else if dirty == nil {
				dirty = e
			}
		}
		el = prev
	}
	if c.used+n <= c.cfg.Size {
		return nil
	}
	if dirty != nil {
		dirty.pins++
	}
	return dirty
}

// removeLocked takes e out of the cache and gives its bytes back; its file
// is closed now or at its last release.
func (c *Cache) removeLocked(e *entry) {
	if e.dropped {
		return
	}
	e.dropped = true
	delete(c.entries, e.oid)
	vid := proto.OidToVid(e.oid)
	if m := c.vdis[vid]; m != nil {
		delete(m, e.oid)
		if len(m) == 0 {
			delete(c.vdis, vid)
		}
	}
	c.lru.Remove(e.elem)
	e.mu.Lock()
	c.used -= int64(e.nvalid)*BlockSize + entryCharge
	c.dirty.Add(-int64(e.ndirty) * BlockSize)
	e.nvalid, e.ndirty = 0, 0
	e.mu.Unlock()
	os.Remove(e.path)
	if e.pins == 0 {
		e.f.Close()
	}
}

// blocks returns the first and one past the last block of [off, off+n).
func blocks(off int64, n int) (int, int) {
	return int(off / BlockSize), int((off + int64(n) + BlockSize - 1) / BlockSize)
}

func bit(m []uint64, i int) bool { return m[i/64]&(1<<(i%64)) != 0 }
func set(m []uint64, i int)      { m[i/64] |= 1 << (i % 64) }

// countInvalid counts the invalid blocks in [lo, hi). The caller holds e.mu.
func (e *entry) countInvalid(lo, hi int) int {
	n := 0
	for i := lo; i < hi; i++ {
		if !bit(e.valid, i) {
			n++
		}
	}
	return n
}

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

// pushFlags: pushes are write-back writes on the replicas, made stable by
// the Backend.Flush that ends every flush.
const pushFlags = proto.FlagCmdWrite | proto.FlagCmdCache

// push sends e's dirty blocks to the replicas (dirtyRuns); an object
// created in the cache is created by its first run. On failure the
// blocks not sent stay dirty.
func (c *Cache) push(ctx context.Context, e *entry) error {
	e.pushMu.Lock()
	defer e.pushMu.Unlock()
	e.mu.Lock()
	if e.ndirty == 0 {
		e.mu.Unlock()
		return nil
	}
	taken := make([]uint64, len(e.dirty))
	copy(taken, e.dirty)
	clear(e.dirty)
	created := e.created
	c.dirty.Add(-int64(e.ndirty) * BlockSize)
	e.ndirty = 0
	valid := make([]uint64, len(e.valid))
	copy(valid, e.valid)
	e.mu.Unlock()

	runs := dirtyRuns(taken, valid, int((e.size+BlockSize-1)/BlockSize))
	for k, r := range runs {
		s := int64(r[0]) * BlockSize
		t := min(int64(r[1])*BlockSize, e.size)
		err := c.pushRange(ctx, e, s, t, created)
		if err != nil {
			// What was not sent is dirty again.
			e.mu.Lock()
			redo := 0
			for _, r := range runs[k:] {
				for i := r[0]; i < r[1]; i++ {
					if bit(taken, i) && !bit(e.dirty, i) {
						set(e.dirty, i)
						redo++
					}
				}
			}
			e.ndirty += redo
			e.mu.Unlock()
			c.dirty.Add(int64(redo) * BlockSize)
			return fmt.Errorf("push %016x: %w", e.oid, err)
		}
		if created {
			e.mu.Lock()
			e.created = false
			e.mu.Unlock()
			created = false
		}
	}
	return nil
}

// maxGap is the most blocks between two dirty runs that a push sends
// along (from the cache, which holds them) to make one request of two.
const maxGap = 16

// dirtyRuns returns the block ranges a push sends: the dirty runs of
// dirty, joined across gaps of at most maxGap valid blocks. Blocks the
// cache does not hold are never sent, not even for an object created in
// the cache: another writer may have created it on the replicas since.
func dirtyRuns(dirty, valid []uint64, n int) [][2]int {
	var runs [][2]int
	for i := 0; i < n; {
		if !bit(dirty, i) {
			i++
			continue
		}
		j := i
		for j < n && bit(dirty, j) {
			j++
		}
		if k := len(runs) - 1; k >= 0 && joinable(valid, runs[k][1], i) {
			runs[k][1] = j
		} else {
			runs = append(runs, [2]int{i, j})
		}
		i = j
	}
	return runs
}

// joinable reports whether the gap [a, b) is short and held by the cache.
func joinable(valid []uint64, a, b int) bool {
	if b-a > maxGap {
		return false
	}
	for i := a; i < b; i++ {
		if !bit(valid, i) {
			return false
		}
	}
	return true
}

func (c *Cache) pushRange(ctx context.Context, e *entry, s, t int64, create bool) error {
	bp := bufpool.Get(int(t - s))
	defer bufpool.Put(bp)
	b := (*bp)[:t-s]
	if _, err := e.f.ReadAt(b, s); err != nil {
		return err
	}
	if create {
		return c.cfg.Backend.CreateAndWrite(ctx, e.oid, 0, s, b, pushFlags)
	}
	return c.cfg.Backend.WriteObject(ctx, e.oid, s, b, pushFlags)
}

// pushWidth is how many objects a flush pushes at once.
const pushWidth = 8

// FlushVdi pushes every dirty block of vid's objects to every copy and
// returns once they are stable: data objects first, the inode (whose
// table names them) last.
func (c *Cache) FlushVdi(ctx context.Context, vid uint32) error {
	return c.flush(ctx, func(oid uint64) bool { return proto.OidToVid(oid) == vid }, true)
}

// Flush is FlushVdi for every VDI (core/volume's Flush, which names none).
func (c *Cache) Flush(ctx context.Context) error {
	return c.flush(ctx, func(uint64) bool { return true }, true)
}

func (c *Cache) flush(ctx context.Context, match func(uint64) bool, sync bool) error {
	var data, inodes []*entry
	c.mu.Lock()
	for oid, e := range c.entries {
		if !match(oid) {
			continue
		}
		e.pins++
		if proto.IsVdiObj(oid) {
			inodes = append(inodes, e)
		} else {
			data = append(data, e)
		}
	}
	c.mu.Unlock()
	defer func() {
		for _, e := range data {
			c.release(e)
		}
		for _, e := range inodes {
			c.release(e)
		}
	}()
	for _, set := range [][]*entry{data, inodes} {
		if err := fanout.Run(len(set), pushWidth, func(i int) error { return c.push(ctx, set[i]) }); err != nil {
			return err
		}
	}
	if !sync {
		return nil
	}
	return c.cfg.Backend.Flush(ctx)
}

// Drop forgets every object of vid the cache holds, dirty blocks included
// (after a delete, or DELETE_CACHE); a push under way finishes first.
func (c *Cache) Drop(vid uint32) {
	c.mu.Lock()
	var es []*entry
	for _, e := range c.vdis[vid] {
		e.pins++
		es = append(es, e)
	}
	c.mu.Unlock()
	for _, e := range es {
		e.pushMu.Lock()
		c.mu.Lock()
		c.removeLocked(e)
		c.mu.Unlock()
		e.pushMu.Unlock()
		c.release(e)
	}
}

// Purge forgets everything the cache holds (CACHE_PURGE), dirty blocks
// included.
func (c *Cache) Purge() {
	c.mu.Lock()
	vids := make([]uint32, 0, len(c.vdis))
	for vid := range c.vdis {
		vids = append(vids, vid)
	}
	c.mu.Unlock()
	for _, vid := range vids {
		c.Drop(vid)
	}
}

// VdiInfo is what the cache holds of one VDI.
type VdiInfo struct {
	Vid          uint32
	Objects      int // objects cached
	DirtyObjects int // of which with dirty blocks
	DirtyBytes   int64
}

// Info is the cache's state (GET_CACHE_INFO).
type Info struct {
	Size, Used int64
	DirtyBytes int64
	DirectIO   bool
	Vdis       []VdiInfo // by vid
}

// Info returns the cache's state.
func (c *Cache) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := Info{Size: c.cfg.Size, Used: c.used, DirtyBytes: c.dirty.Load(), DirectIO: c.cfg.DirectIO}
	for vid, m := range c.vdis {
		vi := VdiInfo{Vid: vid, Objects: len(m)}
		for _, e := range m {
			e.mu.Lock()
			if e.ndirty > 0 || e.created {
				vi.DirtyObjects++
			}
			vi.DirtyBytes += int64(e.ndirty) * BlockSize
			e.mu.Unlock()
		}
		in.Vdis = append(in.Vdis, vi)
	}
	sortVdis(in.Vdis)
	return in
}

func sortVdis(v []VdiInfo) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j].Vid < v[j-1].Vid; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

// BackgroundPushes counts the objects pushed to make room so far.
func (c *Cache) BackgroundPushes() uint64 { return c.pushes.Load() }

// pusher pushes dirty objects, least recently used first, while dirty
// bytes pass a quarter of the size once they passed half of it: writes
// then find clean objects to evict instead of pushing themselves.
func (c *Cache) pusher() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		for c.dirty.Load() > c.cfg.Size/4 && ctx.Err() == nil {
			e := c.oldestDirty()
			if e == nil {
				break
			}
			if err := c.push(ctx, e); err != nil {
				c.cfg.Log.Warn("object cache: background push failed", "oid", fmt.Sprintf("%016x", e.oid), "err", err)
				c.release(e)
				break
			}
			c.pushes.Add(1)
			c.release(e)
		}
	}
}

// oldestDirty returns the least recently used entry with dirty blocks,
// pinned, or nil.
func (c *Cache) oldestDirty() *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*entry)
		e.mu.Lock()
		d := e.ndirty > 0
		e.mu.Unlock()
		if d {
			e.pins++
			return e
		}
	}
	return nil
}
