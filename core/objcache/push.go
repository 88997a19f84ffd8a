package objcache

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// Pushes, flushes, drops and the background pusher.

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
	send := func(r [2]int, create bool) error {
		return c.pushRange(ctx, e, int64(r[0])*BlockSize, min(int64(r[1])*BlockSize, e.size), create)
	}
	var err error
	first := 0
	if created {
		// The first run creates the object; the others write into it.
		if err = send(runs[0], true); err == nil {
			e.mu.Lock()
			e.created = false
			e.mu.Unlock()
			first = 1
		}
	}
	if err == nil {
		// The runs are disjoint: they go out together, as many as a
		// flush sends objects at once.
		rest := runs[first:]
		err = fanout.Run(len(rest), pushWidth, func(i int) error { return send(rest[i], false) })
	}
	if err != nil {
		// What was taken is dirty again (what did go out is sent once
		// more at the next push: the same bytes or newer).
		e.mu.Lock()
		redo := 0
		for _, r := range runs {
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
	slices.SortFunc(in.Vdis, func(a, b VdiInfo) int { return cmp.Compare(a.Vid, b.Vid) })
	return in
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
