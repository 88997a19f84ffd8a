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
	DirectIO bool   // Sheepdog's directio option: cache files opened with O_DIRECT (direct.go)
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
	f    cacheFile
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
	if cfg.DirectIO {
		// Refuse at start, not at the first write, a dir where O_DIRECT
		// fails (tmpfs).
		probe := filepath.Join(cfg.Dir, ".directio")
		f, err := openCacheFile(probe, BlockSize, true)
		if err != nil {
			return nil, fmt.Errorf("object cache %s: %w", cfg.Dir, err)
		}
		f.Close()
		os.Remove(probe)
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
	f, err := openCacheFile(path, size, c.cfg.DirectIO)
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
