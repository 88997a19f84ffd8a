package store

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Create creates object oid, or replaces it, as a file of exactly size
// bytes that reads as zeros except for data at off. The file is sparse: only
// data takes space. The object appears whole or not at all: it is written
// under a tmp name unique to this call and renamed into place. With sync
// set, data and name are on stable storage before Create returns; without,
// after the next Flush.
//
// off+len(data) > size is INVALID_PARMS.
func (s *Store) Create(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if size < 0 || !inRange(off, int64(len(data)), size) {
		return rangeError("create", oid, off, int64(len(data)), size)
	}
	tmp := filepath.Join(s.objDir, fmt.Sprintf("%s.%d%s", proto.ObjectName(oid), s.tmpSeq.Add(1), tmpSuffix))
	var m *sums
	if !s.noSums {
		m = sumsFor(size, off, data, s.maxChunks)
		if !sync {
			// Durable no later than the name (see checksum.go).
			m.b[sumFlags] |= sumUnflushed
			s.unflushed.add(oid)
		}
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return ioError("create", oid, err)
	}
	h := &handle{oid: oid, f: f, fd: int(f.Fd()), size: size, ready: closedReady, sums: m, written: newPageSet(size, off, int64(len(data)))}
	if err := s.fillTmp(f, &h.direct, oid, size, off, data, m, sync); err != nil {
		h.direct.close()
		f.Close()
		os.Remove(tmp)
		return ioError("create", oid, err)
	}
	h.sync.init()
	h.metaDirty.Store(!sync) // a later Sync must be an fsync

	mu := s.pathLock(oid)
	mu.Lock()
	err = os.Rename(tmp, s.objPath(oid))
	if err == nil {
		// The tmp file's descriptor now names the object: keep it open.
		s.files.install(h)
	}
	mu.Unlock()
	if err != nil {
		h.direct.close()
		f.Close()
		os.Remove(tmp)
		return ioError("create", oid, err)
	}
	if !sync {
		// The name is not durable yet; the next sync of any object
		// makes it so (see syncHandle).
		s.dirDirty.Store(true)
		s.dirty.add(oid)
		return nil
	}
	if err := s.syncDir(); err != nil {
		return ioError("create", oid, err)
	}
	return nil
}

// CreateOrWrite is Create for a client's CREATE_AND_WRITE: when oid exists
// already and data covers only part of it, just [off, off+len(data)) is
// written, as WriteAt does. Another writer of the same VDI that allocated
// the object first (or a resend of this very request) then keeps what it
// wrote elsewhere in the object, where a replacing Create would turn it
// into zeros. A payload covering the whole object replaces it, as Create
// does (a copy-on-write carries the whole object). The caller serialises
// the creations and writes of oid (Locks).
//
// A partial payload for an object that does not exist yet (the first
// write to a block of a VDI) is written into an unnamed file (O_TMPFILE)
// that is linked into place only if the name is still free: one
// directory change and no lookup before it, where Create costs a
// lookup, a create and a rename in obj/, which every allocation in the
// store contends for. Without sync, its checksums stay in memory until
// the next sync or close (persistSums): a crash before then leaves an
// object without checksums, whose bytes are then taken as found
// (adoptSums), as those of an object flagged unflushed would be.
func (s *Store) CreateOrWrite(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error {
	if off == 0 && int64(len(data)) == size {
		return s.Create(ctx, oid, size, off, data, sync)
	}
	if _, ok := s.files.peek(oid); ok {
		return s.WriteAt(ctx, oid, data, off, sync)
	}
	err := s.createNew(ctx, oid, size, off, data, sync)
	switch {
	case err == errExists:
		return s.WriteAt(ctx, oid, data, off, sync)
	case err == errNoTmpfile:
		if s.Exists(oid) {
			return s.WriteAt(ctx, oid, data, off, sync)
		}
		return s.Create(ctx, oid, size, off, data, sync)
	}
	return err
}

var (
	errExists    = errors.New("object exists")
	errNoTmpfile = errors.New("O_TMPFILE not supported")
)

// createNew is Create for an object that must not exist yet: errExists
// if it does, errNoTmpfile where the filesystem has no O_TMPFILE.
func (s *Store) createNew(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if size < 0 || !inRange(off, int64(len(data)), size) {
		return rangeError("create", oid, off, int64(len(data)), size)
	}
	if s.noTmpfile.Load() {
		return errNoTmpfile
	}
	fd, err := unix.Open(s.objDir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL {
		s.noTmpfile.Store(true)
		return errNoTmpfile
	}
	if err != nil {
		return ioError("create", oid, &os.PathError{Op: "open O_TMPFILE", Path: s.objDir, Err: err})
	}
	f := os.NewFile(uintptr(fd), s.objPath(oid))
	var m *sums
	if !s.noSums {
		m = sumsFor(size, off, data, s.maxChunks)
		if !sync {
			m.b[sumFlags] |= sumUnflushed
		}
	}
	stored := m
	if !sync {
		stored = nil // kept in memory (see above)
	}
	h := &handle{oid: oid, f: f, fd: fd, size: size, ready: closedReady, sums: m, written: newPageSet(size, off, int64(len(data)))}
	if err := s.fillTmp(f, &h.direct, oid, size, off, data, stored, sync); err != nil {
		h.direct.close()
		f.Close()
		return ioError("create", oid, err)
	}
	h.sync.init()
	h.metaDirty.Store(!sync)
	h.sumsDirty.Store(m != nil && stored == nil)

	mu := s.pathLock(oid)
	mu.Lock()
	err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, s.objPath(oid), unix.AT_SYMLINK_FOLLOW)
	if err == nil {
		if m != nil && !sync {
			// Only now: an object already there under the name
			// (EEXIST) may carry the flag of a crash, to settle.
			s.unflushed.add(oid)
		}
		s.files.install(h)
	}
	mu.Unlock()
	if err != nil {
		h.direct.close()
		f.Close()
		if err == unix.EEXIST {
			return errExists
		}
		return ioError("create", oid, &os.PathError{Op: "link", Path: s.objPath(oid), Err: err})
	}
	if !sync {
		s.dirDirty.Store(true)
		s.dirty.add(oid)
		return nil
	}
	if err := s.syncDir(); err != nil {
		return ioError("create", oid, err)
	}
	return nil
}

// allocatedWhole reports whether the object of key takes its whole size
// on disk from its creation. Sheepdog's store allocates every object it
// creates but inodes and ledger objects, which stay sparse (plain_store:
// prealloc unless is_sparse_object): a node's Used counts a data object
// whole however little of it was written (dog's vdi create -P writes
// nothing else), and a full disk fails the create, not a later write into
// a hole.
func allocatedWhole(key uint64) bool {
	oid, _, _ := proto.SplitKey(key)
	return !proto.IsVdiObj(oid) && !proto.IsLedgerObj(oid)
}

// fillTmp sizes the fresh tmp file f of key, allocates it whole where
// allocatedWhole says so, writes data at off (but its zero spans, which
// read as zeros already: writeFreshSpans; a new object's data is a first
// write, which goes direct where the mode and data allow: direct.go),
// stores the checksums m (if any) and, when asked, syncs it: fsync, as
// the size and the xattr are metadata.
func (s *Store) fillTmp(f *os.File, direct *directFD, key uint64, size, off int64, data []byte, m *sums, sync bool) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	fd := int(f.Fd())
	if allocatedWhole(key) && size > 0 {
		err := ignoringEINTR(func() error { return unix.Fallocate(fd, 0, 0, size) })
		// As Sheepdog's prealloc: a sparse file where the filesystem
		// cannot allocate.
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
	if len(data) > 0 {
		// Inodes and ledgers (not allocated whole) are metadata, read
		// again soon: they stay in the page cache.
		var err error
		if allocatedWhole(key) && s.directable(data, off) {
			err = s.writeFreshDirect(f, direct, data, off)
		} else {
			err = writeFreshSpans(f, data, off)
		}
		if err != nil {
			return err
		}
	}
	if m != nil && m.n > 0 {
		if err := fsetxattr(fd, m.b); err != nil {
			return &os.PathError{Op: "fsetxattr", Path: f.Name(), Err: err}
		}
	}
	if sync && !s.noSync {
		if err := ignoringEINTR(func() error { return unix.Fsync(fd) }); err != nil {
			return &os.PathError{Op: "fsync", Path: f.Name(), Err: err}
		}
	}
	return nil
}

// syncDir makes the renames and unlinks done so far in obj/ durable.
func (s *Store) syncDir() error {
	if s.noSync {
		return nil
	}
	return s.dirSync.do(func() error {
		// Cleared before the fsync: a Create that renames after this
		// point sets it again, one that renamed before is covered.
		s.dirDirty.Store(false)
		rc, err := s.dirFile.SyscallConn()
		if err != nil {
			return err
		}
		// Control keeps the descriptor open for the call even if Close
		// runs meanwhile.
		cerr := rc.Control(func(fd uintptr) {
			err = ignoringEINTR(func() error { return unix.Fsync(int(fd)) })
		})
		if err == nil {
			err = cerr
		}
		if err != nil {
			s.dirDirty.Store(true) // nothing is known to be durable
			return &os.PathError{Op: "fsync", Path: s.objDir, Err: err}
		}
		return nil
	})
}

// ReadAt fills buf with the bytes of object oid at off, after verifying the
// checksums of every chunk the range touches. A missing object is NO_OBJ; a
// range beyond the object's end is INVALID_PARMS (objects are full size, so
// a short read means a bad request, not end of data); a chunk that does not
// match its checksum is an error wrapping ErrChecksum and EIO, and buf then
// holds no bytes of it.
func (s *Store) ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := s.files.acquire(oid)
	if err != nil {
		return openError("read", oid, err)
	}
	defer s.files.release(h)
	if !inRange(off, int64(len(buf)), h.size) {
		return rangeError("read", oid, off, int64(len(buf)), h.size)
	}
	if len(buf) == 0 {
		return nil
	}
	if h.sums != nil || h.sumsErr != nil {
		h.mu.RLock()
		defer h.mu.RUnlock()
		if h.sumsErr != nil {
			s.stats.checksumFailures.Add(1)
			return h.sumsErr
		}
		err := s.readChecked(h, "read", buf, off, false)
		if err != nil && errors.Is(err, ErrChecksum) {
			s.stats.checksumFailures.Add(1)
		}
		return err
	}
	if err := readSparse(h.f, h.fd, buf, off); err != nil {
		// io.EOF here means the file shrank under us, which only a
		// foreign process can do.
		return ioError("read", oid, err)
	}
	return nil
}

// TryReadAt is ReadAt for a caller that must not wait (the NBD reader
// serving a read before it reads the next request): it reports true when
// buf holds the bytes of oid at off, verified against their checksums,
// read without waiting for the disk or for a writer of the object. False
// means it would have had to wait (the object's file is not open, a
// write holds its checksums, or a byte is not in the page cache:
// preadv2 with RWF_NOWAIT), or that something is wrong that ReadAt
// reports properly; buf's contents are then undefined, and the caller
// uses ReadAt where it may block.
func (s *Store) TryReadAt(oid uint64, buf []byte, off int64) bool {
	if s.closed.Load() || len(buf) == 0 {
		return false
	}
	h := s.files.tryAcquire(oid)
	if h == nil {
		return false
	}
	defer s.files.release(h)
	if !inRange(off, int64(len(buf)), h.size) {
		return false
	}
	if h.sums == nil && h.sumsErr == nil {
		return preadNoWait(h.fd, buf, off) == nil
	}
	if !h.mu.TryRLock() {
		return false
	}
	defer h.mu.RUnlock()
	return h.sumsErr == nil && s.readChecked(h, "read", buf, off, true) == nil
}

// WriteAt writes data into object oid at off and updates the checksums of
// the chunks it touches. A missing object is NO_OBJ; a range beyond the
// object's end is INVALID_PARMS; a write that covers part of a chunk that
// already fails its checksum is ErrChecksum (EIO) and changes nothing. With
// sync set, data and checksums are on stable storage before WriteAt
// returns; concurrent synced writes to one object share a sync. Without
// sync, they are stable after the next Flush.
func (s *Store) WriteAt(ctx context.Context, oid uint64, data []byte, off int64, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := s.files.acquire(oid)
	if err != nil {
		return openError("write", oid, err)
	}
	defer s.files.release(h)
	if !inRange(off, int64(len(data)), h.size) {
		return rangeError("write", oid, off, int64(len(data)), h.size)
	}
	if len(data) > 0 {
		if err := s.change(h, "write", off, int64(len(data)), data, sync); err != nil {
			return err
		}
	}
	if !sync {
		s.dirty.add(oid)
		return nil
	}
	if err := s.syncHandle(h); err != nil {
		return ioError("write", oid, err)
	}
	return nil
}

// syncHandle returns once everything written to h before the call is on
// stable storage, sharing the fdatasync with concurrent callers. It also
// makes durable the names of objects created without sync, so that a
// synced write or a flush never leaves an object whose data survives a
// power cut but whose name does not.
func (s *Store) syncHandle(h *handle) error {
	if err := s.persistSums(h); err != nil {
		return err
	}
	if s.noSync {
		return nil
	}
	err := h.sync.do(func() error {
		// Cleared before syncing: a checksum update after this point
		// sets it again for the next sync.
		op, sync := "fdatasync", unix.Fdatasync
		if h.metaDirty.Swap(false) {
			op, sync = "fsync", unix.Fsync
		}
		s.stats.syncs.Add(1)
		if err := s.syncFile(h.oid, false, func() error { return sync(h.fd) }); err != nil {
			if op == "fsync" {
				h.metaDirty.Store(true)
			}
			return &os.PathError{Op: op, Path: h.f.Name(), Err: err}
		}
		return nil
	})
	if err == nil && s.dirDirty.Load() {
		err = s.syncDir()
	}
	return err
}

// zeros is the source of Punch's fallback writes.
var zeros [256 << 10]byte

// Punch makes [off, off+n) of object oid read as zeros, by punching a hole
// (the range then takes no space), or by writing zeros where the filesystem
// cannot punch. The object keeps its size and its checksums follow, as for
// WriteAt. A missing object is NO_OBJ; a range beyond the object's end is
// INVALID_PARMS; punching part of a chunk that fails its checksum is
// ErrChecksum (EIO).
func (s *Store) Punch(ctx context.Context, oid uint64, off, n int64, sync bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := s.files.acquire(oid)
	if err != nil {
		return openError("punch", oid, err)
	}
	defer s.files.release(h)
	if !inRange(off, n, h.size) {
		return rangeError("punch", oid, off, n, h.size)
	}
	if n == 0 {
		return nil
	}
	if err := s.change(h, "punch", off, n, nil, sync); err != nil {
		return err
	}
	if !sync {
		s.dirty.add(oid)
		return nil
	}
	if err := s.syncHandle(h); err != nil {
		return ioError("punch", oid, err)
	}
	return nil
}

func (s *Store) punch(h *handle, off, n int64) error {
	if !s.noPunchHole.Load() {
		err := ignoringEINTR(func() error {
			return unix.Fallocate(h.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
		switch {
		case err == nil:
			return nil
		case err == unix.EOPNOTSUPP || err == unix.ENOSYS:
			if !s.noPunchHole.Swap(true) {
				s.log.Warn("filesystem cannot punch holes; writing zeros instead", "dir", s.objDir, "err", err)
			}
		default:
			return &os.PathError{Op: "fallocate", Path: h.f.Name(), Err: err}
		}
	}
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if _, err := h.f.WriteAt(zeros[:chunk], off); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}

// Remove deletes object oid; a missing object is NO_OBJ. It does not sync
// the directory: a removal lost in a power cut brings back an object that
// recovery treats like any other copy.
func (s *Store) Remove(ctx context.Context, oid uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	mu := s.pathLock(oid)
	mu.Lock()
	err := os.Remove(s.objPath(oid))
	s.files.invalidate(oid)
	s.dirty.remove(oid)
	s.unflushed.remove(oid)
	mu.Unlock()
	if err != nil {
		return openError("remove", oid, err)
	}
	return nil
}

// Exists reports whether object oid is stored.
func (s *Store) Exists(oid uint64) bool {
	_, err := s.Size(oid)
	return err == nil
}

// Size is the size of object oid in bytes; a missing object is NO_OBJ.
func (s *Store) Size(oid uint64) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	if size, ok := s.files.peek(oid); ok {
		return size, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(s.objPath(oid), &st); err != nil {
		return 0, openError("stat", oid, &os.PathError{Op: "stat", Path: s.objPath(oid), Err: err})
	}
	return st.Size, nil
}

// List returns the ids of all stored objects in ascending order. Tmp files
// of Creates in flight and stale copies are not objects.
func (s *Store) List() ([]uint64, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	names, err := readDirNames(s.objDir)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w: %w", s.objDir, proto.ResEIO, err)
	}
	oids := make([]uint64, 0, len(names))
	for _, name := range names {
		if oid, ok := parseOid(name); ok {
			oids = append(oids, oid)
		}
	}
	slices.Sort(oids)
	return oids, nil
}

// parseOid parses an object file name: exactly 16 hex digits, or a strip
// of one, "_<ec_index>" appended (proto.ParseObjectName).
func parseOid(name string) (uint64, bool) { return proto.ParseObjectName(name) }

// Sync puts everything written to object oid so far on stable storage
// (fdatasync, shared with concurrent synced writes). A missing object is
// NO_OBJ.
func (s *Store) Sync(ctx context.Context, oid uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := s.files.acquire(oid)
	if err != nil {
		return openError("sync", oid, err)
	}
	defer s.files.release(h)
	if err := s.syncHandle(h); err != nil {
		return ioError("sync", oid, err)
	}
	return nil
}

// SHA1 is the SHA-1 of the whole object oid, holes read as zeros, computed
// over verified bytes: a chunk that fails its checksum makes SHA1 fail with
// ErrChecksum (EIO), so GET_HASH never vouches for a bad copy. A missing
// object is NO_OBJ.
func (s *Store) SHA1(oid uint64) ([20]byte, error) {
	var sum [20]byte
	d := sha1.New()
	if err := s.scan("sha1", oid, func(p []byte) { d.Write(p) }); err != nil {
		return sum, err
	}
	d.Sum(sum[:0])
	return sum, nil
}
