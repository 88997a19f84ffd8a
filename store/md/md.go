// Package md spreads one node's objects over several disks, as
// Sheepdog's multi-disk sheep does (`sheep DIR,PATH1,PATH2...`): every
// disk is a store.Store of its own, and an object lives on the disk its
// id hashes to on a ring of the disks weighted by their space (Ring, a
// pure function). Disks can be plugged and unplugged while the node
// serves; a disk that fails I/O is unplugged by itself.
//
// Layout. With one directory, the single disk is DIR/obj, exactly the
// single-disk store (store.Store in DIR), so a node keeps its objects
// whether or not it ever had more disks. With extra paths, DIR keeps only
// the node's metadata and each PATH holds objects at its top and stale
// copies in PATH/.stale (Sheepdog's layout); each disk's space, which
// weighs it on the ring, is kept in its spaceAttr xattr.
//
// Invariant: an object is stored on at most one disk, normally the one
// the ring places it on. Moves (after a plug or unplug, or a start with
// another disk list) copy the object to its ring disk and then remove the
// old copy, holding the object's gate exclusively; every other call holds
// it shared, so no call sees an object half moved and no write lands on
// a copy being moved away. While objects may be off their ring disk
// (layout.settled false) a lookup that misses on the ring disk looks on
// the others, so nothing is ever hidden. A crash between copy and remove
// leaves two copies: the next move of that object keeps the ring disk's.
package md

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config says where a node's disks are.
type Config struct {
	// MetaDir is the sheep's store directory (DIR). With no Disks it is
	// also the only disk, its objects in MetaDir/obj.
	MetaDir string
	// Disks are the object directories given after DIR (DIR,PATH1,...).
	Disks []string
	// NoSync, Direct, Logger and MaxOpenFiles are passed to every
	// disk's store.
	NoSync       bool
	Direct       store.DirectMode
	Logger       *slog.Logger
	MaxOpenFiles int
}

// disk is one object directory and its store.
type disk struct {
	path  string // as MD_INFO shows it: DIR/obj, or PATH
	st    *store.Store
	space uint64   // weighs it on the ring
	lock  *os.File // the directory, flocked: one sheep per disk (nil for DIR/obj, under DIR's lock)
}

// close closes the disk's store and lets go of its directory.
func (d *disk) close() error {
	err := d.st.Close()
	if d.lock != nil {
		d.lock.Close()
	}
	return err
}

// layout is one state of the disk set. It is never changed once
// published: plug, unplug and failures publish a new one.
type layout struct {
	disks    []*disk // on the ring, sorted by path (MD_INFO's order)
	ring     *Ring
	draining []*disk // unplugged, objects still being moved off
	// settled: every object is on its ring disk, so lookups look
	// nowhere else.
	settled bool
}

// Store is a node's objects over its disks. Its methods are those of
// store.Store that the node uses; all are safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger
	lay atomic.Pointer[layout]
	// gates order moves with every other call on an object: shared for
	// calls, exclusive for a move. Striped by oid.
	gates [256]sync.RWMutex
	// admin serialises the changes of the layout (plug, unplug, failure,
	// the end of a migration pass).
	admin sync.Mutex

	// OnChange, set before use, runs (in its own goroutine) after the
	// disk set changed and what could be moved was moved: the node's
	// recovery, which fetches from the other nodes what is missing
	// (the objects of a failed disk). nil: nothing runs.
	onChange atomic.Pointer[func()]

	onLastFailed atomic.Pointer[func(error)]
	lastFailed   atomic.Bool // the last disk failed (logged once)
	failures     atomic.Uint64
	checks       atomic.Uint64 // calls of CheckDisks, for syncEvery

	ctx     context.Context // of the moves; cancelled by Close
	cancel  context.CancelFunc
	kick    chan struct{} // wakes the migrator
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed when the migrator has returned
	closed  atomic.Bool
}

// Open opens every disk of cfg. A disk that cannot be used (unreadable,
// no extended attributes) is left out and logged, as in Sheepdog: its
// objects are recovered from the other nodes; Open fails when no disk is
// left, or when a path is given twice or is a sheep's store dir. A disk
// on the unplugged list (unpluggedFile) is purged first.
func Open(cfg Config) (*Store, error) {
	if cfg.MetaDir == "" {
		return nil, errors.New("md: Config.MetaDir is empty")
	}
	s := &Store{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	l := &layout{settled: len(cfg.Disks) == 0}
	var left []string // disks that could not be opened
	if len(cfg.Disks) == 0 {
		st, err := store.Open(store.Config{Dir: cfg.MetaDir, NoSync: cfg.NoSync, Direct: cfg.Direct, Logger: s.log, MaxOpenFiles: cfg.MaxOpenFiles})
		if err != nil {
			return nil, err
		}
		space, err := st.NodeSpace()
		if err != nil {
			st.Close()
			return nil, err
		}
		l.disks = []*disk{{path: filepath.Join(cfg.MetaDir, "obj"), st: st, space: space}}
	} else {
		if err := os.MkdirAll(filepath.Join(cfg.MetaDir, "obj"), 0o755); err != nil {
			return nil, fmt.Errorf("md: %w", err)
		}
		seen := map[string]bool{}
		out := s.unplugged()
		for _, p := range cfg.Disks {
			var d *disk
			cp := cleanPath(p)
			err := fmt.Errorf("md: disk %s given twice: %w", cp, proto.ResInvalidParms)
			if !seen[cp] {
				// A disk unplugged or failed while the node ran may
				// hold outdated objects: purged, as a plug would.
				d, err = s.openDisk(p, out[cp])
			}
			if err != nil && !errors.Is(err, proto.ResInvalidParms) {
				// A broken disk is left out, as in Sheepdog; its
				// objects are recovered from the other nodes.
				s.log.Error("md: disk left out", "path", cp, "err", err)
				left = append(left, cp)
				continue
			}
			if err != nil {
				for _, d := range l.disks {
					d.close()
				}
				return nil, err
			}
			seen[d.path] = true
			l.disks = append(l.disks, d)
			s.log.Info("md: disk", "path", d.path, "space", d.space, "vdisks", Vdisks(d.space), "purged", out[cp])
		}
		if len(l.disks) == 0 {
			return nil, fmt.Errorf("md: none of the disks %v can be used (see the log): %w", cfg.Disks, proto.ResEIO)
		}
	}
	l.sort()
	s.lay.Store(l)
	if len(cfg.Disks) > 0 {
		s.setUnplugged(left...)
	}
	go s.migrator()
	if !l.settled {
		s.kickMigrator() // objects of a start with another disk list
	}
	return s, nil
}

// openDisk opens the disk at path (an extra path, objects at its top).
// purge removes the objects and stale copies it holds first (a plug: what
// it held may be outdated, as in Sheepdog).
func (s *Store) openDisk(path string, purge bool) (*disk, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("md: disk %s: %w", path, err)
	}
	abs = filepath.Clean(abs)
	if abs == filepath.Clean(s.cfg.MetaDir) || isMetaStore(abs) {
		return nil, fmt.Errorf("md: %s is a sheep's store directory, not a disk: %w", abs, proto.ResInvalidParms)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("md: disk %s: %w", abs, err)
	}
	lock, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("md: disk %s: %w", abs, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("md: disk %s is in use by another sheep: %w", abs, proto.ResInvalidParms)
		}
		return nil, fmt.Errorf("md: lock disk %s: %w", abs, err)
	}
	d, err := s.openLocked(abs, purge)
	if err != nil {
		lock.Close()
		return nil, err
	}
	d.lock = lock
	return d, nil
}

// openLocked is openDisk once the directory is locked.
func (s *Store) openLocked(abs string, purge bool) (*disk, error) {
	if purge {
		n, err := purgeDisk(abs)
		if err != nil {
			return nil, fmt.Errorf("md: purge %s: %w", abs, err)
		}
		if n > 0 {
			s.log.Info("md: purged the plugged disk's old objects", "path", abs, "files", n)
		}
	}
	max := s.cfg.MaxOpenFiles
	if max <= 0 {
		max = store.DefaultMaxOpenFiles
	}
	st, err := store.Open(store.Config{Dir: abs, ObjDir: abs, NoSync: s.cfg.NoSync, Direct: s.cfg.Direct, Logger: s.log, MaxOpenFiles: max})
	if err != nil {
		return nil, err
	}
	space, err := st.NodeSpace() // spaceAttr on the disk, as Sheepdog keeps it
	if err != nil || space == 0 {
		st.Close()
		return nil, fmt.Errorf("md: disk %s: no space (%v): %w", abs, err, proto.ResNoSpace)
	}
	return &disk{path: abs, st: st, space: space}, nil
}

// isMetaStore reports a directory that is some sheep's store dir (it has
// the cluster's raft log or format marker): never a disk.
func isMetaStore(dir string) bool {
	for _, name := range []string{"raft", "formatted", "lock"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// purgeDisk removes the object and stale-copy files in dir.
func purgeDisk(dir string) (int, error) {
	n := 0
	for _, sub := range []string{dir, filepath.Join(dir, ".stale")} {
		ents, err := os.ReadDir(sub)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			name := e.Name()
			if sub == dir {
				if _, ok := proto.ParseObjectName(name); !ok {
					continue
				}
			}
			if err := os.Remove(filepath.Join(sub, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func (l *layout) sort() {
	slices.SortFunc(l.disks, func(a, b *disk) int { return cmp.Compare(a.path, b.path) })
	rd := make([]RingDisk, len(l.disks))
	for i, d := range l.disks {
		rd[i] = RingDisk{Path: d.path, Space: d.space}
	}
	l.ring = NewRing(rd)
}

// home is the disk the ring places key on.
func (l *layout) home(key uint64) *disk { return l.disks[l.ring.Locate(key)] }

// member reports whether d is in l (on the ring or draining).
func (l *layout) member(d *disk) bool {
	return slices.Contains(l.disks, d) || slices.Contains(l.draining, d)
}

// SetOnChange installs the function run after the disk set changed (see
// Store.onChange).
func (s *Store) SetOnChange(f func()) { s.onChange.Store(&f) }

func (s *Store) changed() {
	if f := s.onChange.Load(); f != nil && *f != nil {
		go (*f)()
	}
}

func (s *Store) gate(key uint64) *sync.RWMutex {
	oid, _, _ := proto.SplitKey(key)
	return &s.gates[(oid*0x9E3779B97F4A7C15)>>56]
}

// find returns the disk holding key, or its ring disk when none does.
func (s *Store) find(key uint64) *disk {
	l := s.lay.Load()
	d := l.home(key)
	if l.settled || d.st.Exists(key) {
		return d
	}
	for _, o := range l.disks {
		if o != d && o.st.Exists(key) {
			return o
		}
	}
	for _, o := range l.draining {
		if o.st.Exists(key) {
			return o
		}
	}
	return d
}

// on runs f on the store of the disk holding key, under key's gate. A
// call that fails because its disk failed (isDiskFault: the disk is then
// unplugged) or left meanwhile runs once more on the new layout: an
// object of a failed disk is then missing (NO_OBJ, which the gateway
// fills from another copy), a new one is created on another disk.
func (s *Store) on(key uint64, f func(st *store.Store) error) error {
	g := s.gate(key)
	g.RLock()
	defer g.RUnlock()
	d := s.find(key)
	err := f(d.st)
	if err == nil || !s.retry(d, err) {
		return err
	}
	d = s.find(key)
	if err = f(d.st); err != nil && isDiskFault(err) {
		s.fail(d, err)
	}
	return err
}

// retry reports whether a call that failed on d with err should run
// again: d failed (and was unplugged now) or was unplugged meanwhile.
func (s *Store) retry(d *disk, err error) bool {
	if isDiskFault(err) {
		return s.fail(d, err)
	}
	return !s.lay.Load().member(d) && errors.Is(err, proto.ResShutdown)
}

// isDiskFault reports an error that says the disk, not the object, is
// bad: EIO or EROFS from the kernel (a checksum mismatch is one object's
// damage, repaired from another copy).
func isDiskFault(err error) bool {
	if errors.Is(err, store.ErrChecksum) {
		return false
	}
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS)
}

// Create is store.Store.Create on the disk of oid.
func (s *Store) Create(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error {
	return s.on(oid, func(st *store.Store) error { return st.Create(ctx, oid, size, off, data, sync) })
}

// CreateOrWrite is store.Store.CreateOrWrite on the disk of oid.
func (s *Store) CreateOrWrite(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error {
	return s.on(oid, func(st *store.Store) error { return st.CreateOrWrite(ctx, oid, size, off, data, sync) })
}

// ReadAt is store.Store.ReadAt on the disk of oid.
func (s *Store) ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error {
	return s.on(oid, func(st *store.Store) error { return st.ReadAt(ctx, oid, buf, off) })
}

// TryReadAt is store.Store.TryReadAt on the disk of oid; false while a
// change of the disks holds oid's gate.
func (s *Store) TryReadAt(oid uint64, buf []byte, off int64) bool {
	g := s.gate(oid)
	if !g.TryRLock() {
		return false
	}
	defer g.RUnlock()
	return s.find(oid).st.TryReadAt(oid, buf, off)
}

// WriteAt is store.Store.WriteAt on the disk of oid.
func (s *Store) WriteAt(ctx context.Context, oid uint64, data []byte, off int64, sync bool) error {
	return s.on(oid, func(st *store.Store) error { return st.WriteAt(ctx, oid, data, off, sync) })
}

// Punch is store.Store.Punch on the disk of oid.
func (s *Store) Punch(ctx context.Context, oid uint64, off, n int64, sync bool) error {
	return s.on(oid, func(st *store.Store) error { return st.Punch(ctx, oid, off, n, sync) })
}

// Remove is store.Store.Remove on the disk of oid.
func (s *Store) Remove(ctx context.Context, oid uint64) error {
	return s.on(oid, func(st *store.Store) error { return st.Remove(ctx, oid) })
}

// Sync is store.Store.Sync on the disk of oid.
func (s *Store) Sync(ctx context.Context, oid uint64) error {
	return s.on(oid, func(st *store.Store) error { return st.Sync(ctx, oid) })
}

// Repair is store.Store.Repair on the disk of oid.
func (s *Store) Repair(ctx context.Context, oid uint64, good []byte) (int, error) {
	var n int
	err := s.on(oid, func(st *store.Store) (err error) { n, err = st.Repair(ctx, oid, good); return err })
	return n, err
}

// Verify is store.Store.Verify on the disk of oid.
func (s *Store) Verify(oid uint64) error {
	return s.on(oid, func(st *store.Store) error { return st.Verify(oid) })
}

// SHA1 is store.Store.SHA1 on the disk of oid.
func (s *Store) SHA1(oid uint64) ([20]byte, error) {
	var sum [20]byte
	err := s.on(oid, func(st *store.Store) (err error) { sum, err = st.SHA1(oid); return err })
	return sum, err
}

// Size is store.Store.Size on the disk of oid.
func (s *Store) Size(oid uint64) (int64, error) {
	var n int64
	err := s.on(oid, func(st *store.Store) (err error) { n, err = st.Size(oid); return err })
	return n, err
}

// Exists reports whether oid is stored on any disk.
func (s *Store) Exists(oid uint64) bool {
	g := s.gate(oid)
	g.RLock()
	defer g.RUnlock()
	return s.find(oid).st.Exists(oid)
}

// MoveToStale is store.Store.MoveToStale on the disk of oid: the stale
// copy stays on that disk.
func (s *Store) MoveToStale(oid uint64, epoch uint32) error {
	return s.on(oid, func(st *store.Store) error { return st.MoveToStale(oid, epoch) })
}

// ReadStale returns the stale copy of oid from epoch, from whichever disk
// keeps it.
func (s *Store) ReadStale(oid uint64, epoch uint32) ([]byte, error) {
	var first error
	for _, d := range s.all() {
		b, err := d.st.ReadStale(oid, epoch)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, proto.ResNoObj) && first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("md: read stale %016x (epoch %d): %w", oid, epoch, proto.ResNoObj)
	}
	return nil, first
}

// ListStale returns the stale copies of every disk, sorted by oid and
// epoch.
func (s *Store) ListStale() ([]store.StaleObject, error) {
	var out []store.StaleObject
	for _, d := range s.all() {
		objs, err := d.st.ListStale()
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	slices.SortFunc(out, func(a, b store.StaleObject) int {
		return cmp.Or(cmp.Compare(a.Oid, b.Oid), cmp.Compare(a.Epoch, b.Epoch))
	})
	return slices.Compact(out), nil
}

// PurgeStale is store.Store.PurgeStale on every disk.
func (s *Store) PurgeStale(maxEpoch uint32) error {
	var first error
	for _, d := range s.all() {
		if err := d.st.PurgeStale(maxEpoch); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// List returns the objects of every disk, ascending, each once.
func (s *Store) List() ([]uint64, error) {
	var out []uint64
	for _, d := range s.all() {
		oids, err := d.st.List()
		if err != nil {
			if s.lay.Load().member(d) {
				return nil, err
			}
			continue // unplugged meanwhile
		}
		out = append(out, oids...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// all is every disk of the layout, draining ones included.
func (s *Store) all() []*disk {
	l := s.lay.Load()
	return append(slices.Clip(l.disks), l.draining...)
}

// Flush is store.Store.Flush on every disk, in parallel.
func (s *Store) Flush(ctx context.Context) error {
	ds := s.all()
	if len(ds) == 1 {
		return ds[0].st.Flush(ctx)
	}
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.st.Flush(ctx)
			if errs[i] != nil && isDiskFault(errs[i]) && s.fail(d, errs[i]) {
				errs[i] = nil // its objects are recovered from the other copies
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stats adds up the disks' store statistics.
func (s *Store) Stats() store.Stats {
	var t store.Stats
	for _, d := range s.all() {
		st := d.st.Stats()
		t.Syncs += st.Syncs
		t.Marks += st.Marks
		t.Flushes += st.Flushes
		t.FlushedObjects += st.FlushedObjects
		t.Dirty += st.Dirty
		t.ChecksumFailures += st.ChecksumFailures
		t.RepairedChunks += st.RepairedChunks
	}
	return t
}

// Capacity adds up the disks' sizes and free bytes (statfs), as
// Sheepdog's md does.
func (s *Store) Capacity() (size, free uint64, err error) {
	for _, d := range s.lay.Load().disks {
		sz, fr, err := d.st.Capacity()
		if err != nil {
			return 0, 0, err
		}
		size, free = size+sz, free+fr
	}
	return size, free, nil
}

// Used adds up the bytes the disks' objects take.
func (s *Store) Used() (uint64, error) {
	var total uint64
	for _, d := range s.lay.Load().disks {
		u, err := d.st.Used()
		if err != nil {
			return 0, err
		}
		total += u
	}
	return total, nil
}

// Dir is the node's store directory (Config.MetaDir).
func (s *Store) Dir() string { return s.cfg.MetaDir }

// spaceAttr keeps the node's space in MetaDir, as store.Store keeps a
// disk's (Sheepdog's own name for it).
const spaceAttr = "user.md.size"

// NodeSpace is the space the node offers its cluster (automatic vnodes
// weigh it): with one disk, that disk's; with several, their sum when the
// node first started with them, kept in MetaDir's spaceAttr xattr so that it
// does not change with plugs, unplugs or failures (in Sheepdog's node
// mode, md changes move objects only between this node's disks).
func (s *Store) NodeSpace() (uint64, error) {
	// With DIR alone, the disk's store keeps the same xattr on DIR.
	var b [8]byte
	if n, err := unix.Getxattr(s.cfg.MetaDir, spaceAttr, b[:]); err == nil && n == len(b) {
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	l := s.lay.Load()
	if len(s.cfg.Disks) == 0 && len(l.disks) == 1 {
		return l.disks[0].st.NodeSpace()
	}
	var total uint64
	for _, d := range l.disks {
		total += d.space
	}
	binary.LittleEndian.PutUint64(b[:], total)
	if err := unix.Setxattr(s.cfg.MetaDir, spaceAttr, b[:], 0); err != nil {
		s.log.Warn("md: cannot keep the node's space", "dir", s.cfg.MetaDir, "err", err)
	}
	return total, nil
}

// SetNodeSpace keeps space as the node's space (a reweight weighed the
// store again) where NodeSpace reads it first, so that a restarted sheep
// announces it too.
func (s *Store) SetNodeSpace(space uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], space)
	if err := unix.Setxattr(s.cfg.MetaDir, spaceAttr, b[:], 0); err != nil {
		return fmt.Errorf("md: keep the node's space in %s: %w: %w", s.cfg.MetaDir, proto.ResEIO, err)
	}
	return nil
}

// Close stops moving objects and closes every disk. Calls made after it
// fail with SHUTDOWN.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.cancel()
	<-s.stopped
	var first error
	for _, d := range s.all() {
		if err := d.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
