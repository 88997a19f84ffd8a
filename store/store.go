// Package store is one node's on-disk object store, in Sheepdog's "plain"
// layout (docs/protocol.md §3.4): one file per object under <dir>/obj/, named by
// the object id as 16 lower-case hex digits, and superseded copies under
// <dir>/obj/.stale/<oid>.<epoch>. It does no networking and knows nothing of
// replication; core/gateway and core/recovery decide what goes where.
//
// Objects are always full size: Create makes a sparse file of the object's
// size, and reads and writes must stay inside it.
//
// Errors wrap a proto.Result kind with the operation and the oid, so callers
// branch with errors.As: NO_OBJ for a missing object, INVALID_PARMS for a
// range outside the object, NO_SPACE for a full disk, EIO for any other I/O
// failure, SHUTDOWN after Close.
//
// Integrity: every object carries XXH3 checksums of its chunks in an
// xattr (checksum.go). A read never returns bytes of a chunk that does not
// match them; it fails with an error wrapping ErrChecksum and EIO instead,
// and Repair rewrites the bad chunks from a good copy.
//
// Durability: a call with sync set returns only once its data (and, for
// Create, the object's name) is on stable storage. Concurrent synced writes
// to one object share one fdatasync, or fsync when the checksums changed
// (group commit). A call without sync is stable after the next Flush,
// which syncs only the objects changed that way since the last one
// (flush.go). Config.NoSync turns all syncing off, for tests.
package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Config says where a Store lives and how it behaves. The zero value of
// every field but Dir is usable.
type Config struct {
	// Dir is the store directory; objects live in Dir/obj. It must be on a
	// filesystem with user extended attributes.
	Dir string
	// ObjDir, when set, holds the objects instead of Dir/obj: a disk of a
	// multi-disk node keeps them at its top (store/md). Stale copies are
	// in ObjDir/.stale either way.
	ObjDir string
	// NoSync skips every fdatasync and directory fsync (sheep -n). Data then
	// survives a process crash but not a power cut. For tests.
	NoSync bool
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// MaxOpenFiles bounds the idle object files kept open; 0 means
	// DefaultMaxOpenFiles.
	MaxOpenFiles int
	// Direct says which object writes go to the disk with O_DIRECT
	// (direct.go); the zero value is DirectFresh.
	Direct DirectMode

	// noChecksums turns chunk checksums off (checksum.go), for the
	// benchmarks that measure what they cost.
	noChecksums bool
}

// Store is one node's object store. All methods are safe for concurrent
// use.
type Store struct {
	dir      string
	objDir   string // dir/obj
	staleDir string // dir/obj/.stale
	noSync   bool
	noSums   bool // keep and check no chunk checksums
	// maxChunks is the most chunks a new object's checksums have: 256,
	// fewer where the filesystem keeps small xattrs (checksum.go).
	maxChunks int
	log       *slog.Logger

	files   *fdCache
	dirFile *os.File  // objDir, open to fsync it after renames
	dirSync syncGroup // group commit of fsync(objDir)
	// dirDirty is set after a Create without sync renamed an object into
	// place, and cleared when an fsync of objDir begins.
	dirDirty atomic.Bool

	dirty      oidSet    // objects changed without sync since the flush pass that last took them (flush.go)
	unflushed  oidSet    // objects whose unflushed flag this process may have set (checksum.go)
	flushGroup syncGroup // group commit of flush passes
	stats      stats
	// syncHook, set by tests before use, runs before every sync of an
	// object file (mark: one that makes the unflushed flag durable); its
	// error fails the sync.
	syncHook func(oid uint64, mark bool) error

	// pathLocks serialise the changes of an object's path (rename into
	// place, unlink, rename to .stale) together with the matching update of
	// the file cache, and with the file cache's opens of the path, so that
	// the cache always ends up holding the inode the path names and no
	// inode is used through two handles (fdcache.go). Striped by oid.
	pathLocks [64]sync.Mutex

	tmpSeq      atomic.Uint64 // makes Create's tmp names unique
	direct      atomic.Bool   // O_DIRECT is usable here (Config.Direct is not DirectOff, direct.go)
	directAll   bool          // Config.Direct is DirectAll
	noPunchHole atomic.Bool   // fallocate(PUNCH_HOLE) is unsupported here
	noTmpfile   atomic.Bool   // open(O_TMPFILE) is unsupported here
	closed      atomic.Bool
}

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("store: closed: %w", proto.ResShutdown)

const (
	objDirName   = "obj"
	staleDirName = ".stale"
	tmpSuffix    = ".tmp"
	probeAttr    = "user.sheepdog.probe"
)

// Open opens (creating if needed) the store in cfg.Dir. It fails when Dir
// does not support user extended attributes, which Sheepdog keeps per
// object. Leftover temporary files of Creates interrupted by a crash are
// removed.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: Config.Dir is empty")
	}
	s := &Store{
		dir:      cfg.Dir,
		objDir:   cmp.Or(cfg.ObjDir, filepath.Join(cfg.Dir, objDirName)),
		staleDir: filepath.Join(cmp.Or(cfg.ObjDir, filepath.Join(cfg.Dir, objDirName)), staleDirName),
		noSync:   cfg.NoSync,
		noSums:   cfg.noChecksums,
		log:      cfg.Logger,
	}
	s.direct.Store(cfg.Direct != DirectOff)
	s.directAll = cfg.Direct == DirectAll
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", cfg.Dir, err)
	}
	maxN, err := probeXattr(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s.maxChunks = maxN
	if maxN < maxChunks {
		s.log.Info("the store's filesystem keeps small extended attributes: checksums cover larger chunks",
			"dir", cfg.Dir, "max_xattr_bytes", sumHeaderSize+8*maxN, "chunk_bytes_4MiB_object", int64(1)<<chunkShiftFor(4<<20, maxN))
	}
	if err := os.MkdirAll(s.staleDir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", s.staleDir, err)
	}
	if err := s.removeTmpFiles(); err != nil {
		return nil, err
	}
	d, err := os.Open(s.objDir)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", s.objDir, err)
	}
	s.dirFile = d
	s.dirSync.init()
	s.flushGroup.init()
	max := cfg.MaxOpenFiles
	if max <= 0 {
		max = DefaultMaxOpenFiles
	}
	s.files = newFDCache(max, func(oid uint64) (*os.File, error) {
		return os.OpenFile(s.objPath(oid), os.O_RDWR, 0)
	}, s.loadSums, s.pathLock)
	s.files.persist = func(h *handle) {
		if err := s.persistSums(h); err != nil {
			// The unflushed flag stays on disk: the next open
			// of the object settles its chunks (checksum.go).
			s.log.Warn("cannot store checksums kept in memory", "oid", fmt.Sprintf("%016x", h.oid), "err", err)
		}
	}
	return s, nil
}

// probeXattr finds how many chunks a checksum xattr in dir may describe:
// it sets, reads back and removes a user.* attribute on a scratch file, as
// large as the biggest checksum attribute, then halving the chunks while
// the filesystem answers that the value does not fit (ENOSPC, E2BIG or
// ERANGE: ext4 keeps a file's xattrs in one block, 1 KiB on small
// images). Any other failure, or no room even for minChunks, means the
// store cannot keep checksums there.
func probeXattr(dir string) (int, error) {
	f, err := os.CreateTemp(dir, ".xattr-probe-*")
	if err != nil {
		return 0, fmt.Errorf("store: create probe file in %s: %w", dir, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var tooBig error
	for n := maxChunks; n >= minChunks; n /= 2 {
		err := probeXattrSize(f, sumHeaderSize+8*n)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.E2BIG) && !errors.Is(err, unix.ERANGE) {
			return 0, fmt.Errorf("store dir %s does not support extended attributes (user.*): %w", dir, err)
		}
		tooBig = err
	}
	return 0, fmt.Errorf("store dir %s keeps no extended attribute of %d bytes, the least checksums need (or its disk is full): %w",
		dir, sumHeaderSize+8*minChunks, tooBig)
}

// probeXattrSize sets, reads back and removes a value of size bytes as
// the probe attribute of f.
func probeXattrSize(f *os.File, size int) error {
	want := bytes.Repeat([]byte("1"), size)
	err := xattr.FSet(f, probeAttr, want)
	if err == nil {
		var v []byte
		v, err = xattr.FGet(f, probeAttr)
		if err == nil && !bytes.Equal(v, want) {
			err = fmt.Errorf("read back %d bytes, want %d", len(v), len(want))
		}
	}
	if err == nil {
		err = xattr.FRemove(f, probeAttr)
	}
	return err
}

// removeTmpFiles deletes the tmp files of Creates that never reached their
// rename. Only this process writes obj/, so at Open none is in flight.
func (s *Store) removeTmpFiles() error {
	names, err := readDirNames(s.objDir)
	if err != nil {
		return fmt.Errorf("store: list %s: %w", s.objDir, err)
	}
	n := 0
	for _, name := range names {
		if !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(s.objDir, name)); err != nil && !isNotExist(err) {
			return fmt.Errorf("store: remove leftover %s: %w", name, err)
		}
		n++
	}
	if n > 0 {
		s.log.Info("removed leftover tmp objects", "dir", s.objDir, "count", n)
	}
	return nil
}

// Close closes the open object files. Requests still running finish; every
// call made after Close fails with SHUTDOWN.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.files.close()
	return s.dirFile.Close()
}

// Dir is the store directory, as given in Config.Dir.
func (s *Store) Dir() string { return s.dir }

// Capacity reports the total and the available bytes of the filesystem
// holding Dir (statfs; available is what an unprivileged writer can use).
func (s *Store) Capacity() (size, free uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("store: statfs %s: %w: %w", s.dir, proto.ResEIO, err)
	}
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	return st.Blocks * unit, st.Bavail * unit, nil
}

// spaceAttr is the store dir's xattr that keeps NodeSpace, under the
// name Sheepdog gives it (a little-endian u64).
const spaceAttr = "user.md.size"

// NodeSpace is the space this store offers its cluster, which automatic
// vnodes weigh: as in Sheepdog, the bytes available (statfs f_bavail) when
// the store was first opened, kept in the store dir's xattr spaceAttr,
// so that it stays the same across restarts however full the store gets.
func (s *Store) NodeSpace() (uint64, error) {
	var b [8]byte
	n, err := unix.Getxattr(s.dir, spaceAttr, b[:])
	if err == nil && n == len(b) {
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	_, free, err := s.Capacity()
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint64(b[:], free)
	if err := unix.Setxattr(s.dir, spaceAttr, b[:], 0); err != nil {
		s.log.Warn("cannot keep the store's space", "dir", s.dir, "err", err)
	}
	return free, nil
}

// Used reports the bytes the filesystem has allocated to the files in
// Dir/obj: objects and Creates in flight. Holes of sparse objects cost
// nothing, and stale copies (obj/.stale) are not counted, as Sheepdog's
// node size leaves them out (its walk of the object dir skips .stale):
// they are on their way out, and count as neither used nor free.
func (s *Store) Used() (uint64, error) {
	var total uint64
	for _, dir := range []string{s.objDir} {
		names, err := readDirNames(dir)
		if err != nil {
			return 0, fmt.Errorf("store: list %s: %w: %w", dir, proto.ResEIO, err)
		}
		for _, name := range names {
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(dir, name), &st)
			if errors.Is(err, unix.ENOENT) {
				continue // removed meanwhile
			}
			if err != nil {
				return 0, fmt.Errorf("store: stat %s: %w: %w", name, proto.ResEIO, err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				total += uint64(st.Blocks) * 512
			}
		}
	}
	return total, nil
}

// objPath is the file of object oid, or of a strip when oid is a
// proto.StripKey ("%016x_%d").
func (s *Store) objPath(oid uint64) string {
	return filepath.Join(s.objDir, proto.ObjectName(oid))
}

// pathLock is the lock serialising path changes of oid. The multiplier
// spreads inode oids, whose low 32 bits are all zero.
func (s *Store) pathLock(oid uint64) *sync.Mutex {
	return &s.pathLocks[(oid*0x9E3779B97F4A7C15)>>58]
}

// ioError wraps an I/O failure on object oid with the kind callers branch
// on: NO_SPACE for a full disk or quota, EIO for anything else. The cause
// stays in the chain for errors.Is.
func ioError(op string, oid uint64, err error) error {
	kind := proto.ResEIO
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		kind = proto.ResNoSpace
	}
	return fmt.Errorf("store: %s %016x: %w: %w", op, oid, kind, err)
}

// openError maps a failure to open object oid: NO_OBJ when it does not
// exist, the I/O kinds otherwise.
func openError(op string, oid uint64, err error) error {
	if isNotExist(err) {
		return fmt.Errorf("store: %s %016x: %w", op, oid, proto.ResNoObj)
	}
	if err == errClosed {
		return err
	}
	return ioError(op, oid, err)
}

// rangeError reports a range [off, off+n) that does not fit in an object of
// size bytes.
func rangeError(op string, oid uint64, off, n, size int64) error {
	return fmt.Errorf("store: %s %016x: range [%d, %d+%d) outside object of %d bytes: %w",
		op, oid, off, off, n, size, proto.ResInvalidParms)
}

// inRange reports whether [off, off+n) lies inside [0, size), without
// overflow.
func inRange(off, n, size int64) bool {
	return off >= 0 && n >= 0 && off <= size && n <= size-off
}

// isNotExist reports a missing file, for callers that tolerate one.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// readDirNames lists the names in dir, unsorted.
func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// ignoringEINTR retries fn while it is interrupted by a signal: fallocate
// and fdatasync may return EINTR on some filesystems (tmpfs, FUSE) even
// with SA_RESTART handlers.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}
