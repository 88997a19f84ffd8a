package store

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultMaxOpenFiles is the size of the open-file cache when
// Config.MaxOpenFiles is zero.
const DefaultMaxOpenFiles = 512

// handle is one open object file, shared by every request on that object.
//
// f, fd and size are set once, before ready is closed, and never change:
// objects are never resized in place (Create writes a new inode and renames
// it over the old one), so size is the object's size for the life of the
// inode f refers to.
type handle struct {
	oid   uint64
	f     *os.File
	fd    int           // f.Fd(), kept to call fdatasync and fallocate directly
	size  int64         // file size when opened; fixed for the inode's lifetime
	ready chan struct{} // closed once f or err is set
	err   error         // why opening failed; read only after ready is closed

	sync syncGroup // group commit of fdatasync on this inode

	direct directFD // the inode opened with O_DIRECT (Config.Direct)

	// mu orders the I/O on the inode with its checksums (checksum.go):
	// readers verify under RLock; WriteAt, Punch and repairs change data
	// and checksums together under Lock, so a reader never sees data and
	// checksums from different writes. Syncs run outside it.
	mu sync.RWMutex
	// sums are the inode's chunk checksums, set before ready is closed
	// and changed only under mu; nil when the store keeps none.
	sums *sums
	// sumsErr is why the checksums are unusable (a damaged xattr): every
	// checked operation fails with it until the object is replaced.
	sumsErr error
	// metaDirty is set when the xattr changed since the last sync, so the
	// next sync must be an fsync (fdatasync may skip the xattr).
	metaDirty atomic.Bool
	// sumsDirty is set when sums hold checksums not yet stored in the
	// xattr (write-back writes to a flagged object, checksum.go); set
	// and cleared under mu. A handle with it set is stored before it is
	// synced or closed, and is not evicted until it is clear.
	sumsDirty atomic.Bool
	// unflushedGen counts the changes made without sync (under mu), so
	// that a flush clears the unflushed flag only if none came after
	// its sync began (checksum.go).
	unflushedGen uint64
	// written is the set of pages that may hold data, for an object
	// this process created with part of its data; nil when unknown.
	// Changed only under mu (written.go).
	written pageSet

	// Guarded by fdCache.mu.
	refs       int     // requests using f; f is closed only when refs == 0
	cached     bool    // cached ⇔ fdCache.m[oid] == this handle
	prev, next *handle // LRU list links, valid only while cached
}

// closedReady is the ready channel of handles that are open from birth.
var closedReady = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// fdCache keeps recently used object files open, in LRU order. Each
// insertion evicts idle handles from the cold end until at most max remain
// (a few per insertion, see maxVictims). Handles in use are never closed: a
// handle evicted or invalidated while in use leaves the map at once and is
// closed by its last release. So the cache may exceed max by the handles in
// use, and never for long by idle ones.
//
// Invariant: an inode is used through at most one handle at a time, so
// that handle.sums is the only in-memory copy of the inode's checksums and
// handle.mu the only lock ordering its I/O with them (checksum.go). Two
// handles on one inode would each update the xattr from their own copy:
// reads through one would fail on good data written through the other, and
// the xattr on disk would end up describing neither.
//
// It rests on one lock, the oid's path lock (Store.pathLock), held across
//   - every change of an object's path (Create's rename into place,
//     Remove's unlink, MoveToStale's rename) together with the install or
//     invalidate for that oid that follows it (object.go, stale.go);
//   - a cache miss in acquire, from the check that no handle is cached
//     through the handle's insertion to the open of the path.
//
// So a handle opens the inode the path names while it is the map's entry
// for oid, and the path change that replaces that inode comes later and
// drops it: after the change no lookup finds it, and requests already
// holding it finish on the old inode, as if they had run before the change.
// Opening outside the lock broke this both ways: a handle dropped by a
// Remove could open the file a later Create renamed into place, next to
// the handle that Create installed; and a miss between Create's rename and
// its install opened the new file just before install put Create's own
// handle for it in the map. An idle handle evicted from the cache has no
// requests, so a later handle on the same inode does not count as a second.
type fdCache struct {
	open func(oid uint64) (*os.File, error) // opens the object file, O_RDWR
	// load reads the checksums of a freshly opened object file of size
	// bytes (nil when the store keeps none); its error goes to
	// handle.sumsErr.
	load func(oid uint64, f *os.File, size int64) (*sums, error)
	// pathLock is the oid's path lock (see the type comment).
	pathLock func(oid uint64) *sync.Mutex
	// persist stores the checksums a handle keeps in memory only
	// (handle.sumsDirty) before its file is closed; nil for none.
	persist func(h *handle)
	max     int

	mu struct {
		sync.Mutex
		closed bool
		m      map[uint64]*handle
		// lru is a circular list through a sentinel: lru.next is the most
		// recently used handle, lru.prev the least.
		lru handle
	}
}

func newFDCache(max int, open func(oid uint64) (*os.File, error), load func(oid uint64, f *os.File, size int64) (*sums, error), pathLock func(oid uint64) *sync.Mutex) *fdCache {
	c := &fdCache{open: open, load: load, pathLock: pathLock, max: max}
	c.mu.m = make(map[uint64]*handle, max)
	c.mu.lru.next, c.mu.lru.prev = &c.mu.lru, &c.mu.lru
	return c
}

// acquire returns the open handle of oid with a reference that the caller
// must give back with release. Opening errors are returned as they come
// from open (an *os.PathError for a missing file), or errClosed.
func (c *fdCache) acquire(oid uint64) (*handle, error) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	if h := c.mu.m[oid]; h != nil {
		return c.useLocked(h)
	}
	c.mu.Unlock()

	// A miss: enter the map and open the path under the oid's path lock,
	// so that no path change falls in between (see the type comment).
	// Look again: another request may have opened it, or a Create
	// installed it, while we waited for the lock.
	pl := c.pathLock(oid)
	pl.Lock()
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		pl.Unlock()
		return nil, errClosed
	}
	if h := c.mu.m[oid]; h != nil {
		pl.Unlock()
		return c.useLocked(h)
	}
	h := &handle{oid: oid, ready: make(chan struct{}), refs: 1}
	h.sync.init()
	victims, dirty := c.insertLocked(h)
	c.mu.Unlock()
	f, err := c.open(oid)
	// The descriptor pins the inode: a path change from here on drops h
	// and leaves it on the old inode.
	pl.Unlock()
	c.closeAll(victims)
	c.persistAll(dirty)

	var st unix.Stat_t
	if err == nil {
		if err = unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			err = &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
		}
	}

	var sums *sums
	var sumsErr error
	if err == nil && c.load != nil {
		sums, sumsErr = c.load(oid, f, st.Size)
	}

	c.mu.Lock()
	if err != nil {
		h.err = err
		if h.cached {
			c.removeLocked(h) // let the next request try again
		}
	} else {
		h.f, h.fd, h.size = f, int(f.Fd()), st.Size
		h.sums, h.sumsErr = sums, sumsErr
		// A handle evicted with unsynced checksum changes took its
		// metaDirty with it: the first sync of a reopened file is an
		// fsync, so that it covers them (flush.go).
		h.metaDirty.Store(true)
	}
	close(h.ready)
	c.mu.Unlock()
	if err != nil {
		c.release(h)
		return nil, err
	}
	return h, nil
}

// useLocked takes a reference on h, the cached handle, for acquire: it
// unlocks c.mu and waits until h is open.
func (c *fdCache) useLocked(h *handle) (*handle, error) {
	h.refs++
	c.unlinkLocked(h)
	c.pushFrontLocked(h)
	c.mu.Unlock()
	<-h.ready // another request may still be opening it
	if h.err != nil {
		c.release(h)
		return nil, h.err
	}
	return h, nil
}

// tryAcquire is acquire for an object whose file is open already: nil
// when oid has no handle in the cache or its open has not finished (an
// open waits for the disk).
func (c *fdCache) tryAcquire(oid uint64) *handle {
	c.mu.Lock()
	h := c.mu.m[oid]
	if c.mu.closed || h == nil {
		c.mu.Unlock()
		return nil
	}
	select {
	case <-h.ready:
	default:
		c.mu.Unlock()
		return nil
	}
	if h.err != nil {
		c.mu.Unlock()
		return nil
	}
	h.refs++
	c.unlinkLocked(h)
	c.pushFrontLocked(h)
	c.mu.Unlock()
	return h
}

// release gives back a reference taken by acquire.
func (c *fdCache) release(h *handle) {
	c.mu.Lock()
	h.refs--
	last := h.refs == 0 && !h.cached && h.f != nil
	c.mu.Unlock()
	if last {
		c.closeHandle(h)
	}
}

// closeHandle closes the file of h, which has left the cache and has no
// users, after storing the checksums it kept in memory: the next handle
// on the inode (a reopen of an evicted object, or ReadStale of one moved
// to .stale) reads them from the xattr.
func (c *fdCache) closeHandle(h *handle) {
	if c.persist != nil && h.sumsDirty.Load() {
		c.persist(h)
	}
	h.direct.close()
	h.f.Close()
}

// install puts h, a file just renamed into place as oid, in the cache in
// place of any older handle. The caller holds the oid's path lock.
func (c *fdCache) install(h *handle) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		c.closeHandle(h)
		return
	}
	var old *handle
	if prev := c.mu.m[h.oid]; prev != nil {
		old = c.dropLocked(prev)
	}
	victims, dirty := c.insertLocked(h)
	c.mu.Unlock()
	if old != nil {
		c.closeHandle(old)
	}
	c.closeAll(victims)
	c.persistAll(dirty)
}

// invalidate forgets oid's handle after its path changed (removed, or
// moved to .stale). The caller holds the oid's path lock.
func (c *fdCache) invalidate(oid uint64) {
	c.mu.Lock()
	var old *handle
	if h := c.mu.m[oid]; h != nil {
		old = c.dropLocked(h)
	}
	c.mu.Unlock()
	if old != nil {
		c.closeHandle(old)
	}
}

// peek reports oid's size if an open handle for it is cached.
func (c *fdCache) peek(oid uint64) (size int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.mu.m[oid]; h != nil && h.f != nil {
		return h.size, true
	}
	return 0, false
}

// len is the number of cached handles.
func (c *fdCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mu.m)
}

// close closes every idle file and makes acquire fail from now on; files in
// use are closed by their last release.
func (c *fdCache) close() {
	c.mu.Lock()
	c.mu.closed = true
	var idle []*handle
	for _, h := range c.mu.m {
		if d := c.dropLocked(h); d != nil {
			idle = append(idle, d)
		}
	}
	c.mu.Unlock()
	for _, h := range idle {
		c.closeHandle(h)
	}
}

// dropLocked takes h out of the map and returns it if nobody uses it any
// more and its file is open, for the caller to close after unlocking.
func (c *fdCache) dropLocked(h *handle) *handle {
	c.removeLocked(h)
	if h.refs == 0 && h.f != nil {
		return h
	}
	return nil
}

// maxVictims bounds the files one insertion closes, to keep the work done
// by one request small; any excess is evicted by later insertions.
const maxVictims = 4

// insertLocked adds h as most recently used and evicts idle handles from
// the cold end while the cache is over max (evictLocked), returning them
// for the caller to close after unlocking, and those to store first.
func (c *fdCache) insertLocked(h *handle) (victims, dirty [maxVictims]*handle) {
	c.mu.m[h.oid] = h
	h.cached = true
	c.pushFrontLocked(h)
	return c.evictLocked()
}

// evictLocked evicts idle handles from the cold end while the cache is
// over max, and returns them for the caller to close after unlocking.
// An idle handle whose checksums are in memory only stays cached (a new
// handle on its inode would read the stored, older ones): it is returned
// in dirty with a reference taken, for the caller to store them
// (persistAll), which then evicts it.
func (c *fdCache) evictLocked() (victims, dirty [maxVictims]*handle) {
	n, d := 0, 0
	for v := c.mu.lru.prev; v != &c.mu.lru && len(c.mu.m) > c.max && n < maxVictims && d < maxVictims; {
		prev := v.prev
		switch {
		case v.refs != 0 || v.f == nil:
		case v.sumsDirty.Load():
			if c.persist != nil {
				v.refs++
				dirty[d] = v
				d++
			}
		default:
			c.removeLocked(v)
			victims[n] = v
			n++
		}
		v = prev
	}
	return victims, dirty
}

// persistAll stores the in-memory checksums of the handles evictLocked
// returned in dirty, gives back their references, and evicts again, so
// that an idle cache ends up within max.
// A few rounds at most: writes may make handles dirty again meanwhile.
func (c *fdCache) persistAll(dirty [maxVictims]*handle) {
	for round := 0; ; round++ {
		for _, h := range dirty {
			if h != nil {
				c.persist(h)
				c.release(h)
			}
		}
		if dirty[0] == nil || round == 2 {
			return
		}
		var victims [maxVictims]*handle
		c.mu.Lock()
		if c.mu.closed {
			c.mu.Unlock()
			return
		}
		victims, dirty = c.evictLocked()
		c.mu.Unlock()
		c.closeAll(victims)
	}
}

func (c *fdCache) removeLocked(h *handle) {
	delete(c.mu.m, h.oid)
	h.cached = false
	c.unlinkLocked(h)
}

func (c *fdCache) pushFrontLocked(h *handle) {
	h.prev, h.next = &c.mu.lru, c.mu.lru.next
	h.prev.next, h.next.prev = h, h
}

func (c *fdCache) unlinkLocked(h *handle) {
	h.prev.next, h.next.prev = h.next, h.prev
	h.prev, h.next = nil, nil
}

func (c *fdCache) closeAll(victims [maxVictims]*handle) {
	for _, h := range victims {
		if h != nil {
			c.closeHandle(h)
		}
	}
}
