package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// hashBufs holds the 1 MiB read buffers of scan.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// scan passes the whole object oid to fn in order, in pieces of at least
// 1 MiB that are verified against the checksums before fn sees them. A
// missing object is NO_OBJ; a bad chunk is ErrChecksum (EIO).
func (s *Store) scan(op string, oid uint64, fn func(p []byte)) error {
	h, err := s.files.acquire(oid)
	if err != nil {
		return openError(op, oid, err)
	}
	defer s.files.release(h)
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.sumsErr != nil {
		return h.sumsErr
	}
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	if h.sums != nil && cap(*bp) < 1<<h.sums.shift {
		*bp = make([]byte, 1<<h.sums.shift) // pieces are whole chunks
	}
	buf := (*bp)[:cap(*bp)]
	for pos := int64(0); pos < h.size; {
		p := buf[:min(int64(len(buf)), h.size-pos)]
		if h.sums != nil {
			err = s.readChecked(h, op, p, pos, false)
		} else if _, err = h.f.ReadAt(p, pos); err != nil {
			err = ioError(op, oid, err)
		}
		if err != nil {
			return err
		}
		fn(p)
		pos += int64(len(p))
	}
	return nil
}

// Verify reads the whole object oid and checks every chunk against its
// checksum (a scrub). A missing object is NO_OBJ; the first bad chunk is
// an error wrapping ErrChecksum and EIO.
func (s *Store) Verify(oid uint64) error {
	return s.scan("verify", oid, func([]byte) {})
}

// Repair rewrites the chunks of the local copy of oid that fail their
// checksums with the same bytes of good, a whole good copy of the object
// read from elsewhere, and returns how many chunks it rewrote. Chunks that
// verify are left alone even where they differ from good: a write that
// reached this copy before good was read must not be undone. An object
// whose checksums are unusable is replaced by good as a whole (Create).
// The result is on stable storage when Repair returns.
//
// The caller serialises Repair with the other writers of oid (Locks), as
// for Create. A missing object is NO_OBJ; good of another size than the
// object is INVALID_PARMS.
func (s *Store) Repair(ctx context.Context, oid uint64, good []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	h, err := s.files.acquire(oid)
	if err != nil {
		return 0, openError("repair", oid, err)
	}
	defer s.files.release(h)
	if int64(len(good)) != h.size {
		return 0, rangeError("repair", oid, 0, int64(len(good)), h.size)
	}
	if h.sums == nil && h.sumsErr == nil {
		return 0, nil // nothing to check against
	}
	h.mu.Lock()
	if h.sumsErr != nil {
		h.mu.Unlock()
		n := newSums(h.size, s.maxChunks).n
		s.log.Warn("replacing object with damaged checksums", "oid", fmt.Sprintf("%016x", oid), "err", h.sumsErr)
		s.stats.repaired.Add(uint64(n))
		return n, s.Create(ctx, oid, h.size, 0, good, true)
	}
	bad, err := s.repairChunks(h, good)
	h.mu.Unlock()
	if err != nil || len(bad) == 0 {
		return len(bad), err
	}
	if err := s.syncHandle(h); err != nil {
		return len(bad), ioError("repair", oid, err)
	}
	s.stats.repaired.Add(uint64(len(bad)))
	s.log.Warn("repaired bad chunks", "oid", fmt.Sprintf("%016x", oid), "chunks", bad)
	return len(bad), nil
}

// repairChunks finds the chunks of h that fail their checksums and
// rewrites them from good, checksums first. The caller holds h.mu.
func (s *Store) repairChunks(h *handle, good []byte) ([]int, error) {
	m := h.sums
	bp := getChunkBuf(1 << m.shift)
	defer chunkBufs.Put(bp)
	var bad []int
	b := m.stage()
	for i := range m.n {
		cs, cl := m.chunk(i)
		if _, err := h.f.ReadAt((*bp)[:cl], cs); err == nil && m.matches(i, chunkSum((*bp)[:cl])) {
			continue
		}
		// Unreadable or bad: take good's bytes, and accept only them.
		c := chunkSum(good[cs : cs+cl])
		m.set(b, i, c, c)
		bad = append(bad, i)
	}
	if len(bad) == 0 {
		return nil, nil
	}
	if err := fsetxattr(h.fd, b); err != nil {
		return nil, ioError("repair", h.oid, err)
	}
	m.commit()
	h.sumsDirty.Store(false)
	h.metaDirty.Store(true)
	for _, i := range bad {
		cs, cl := m.chunk(i)
		h.written.add(cs, cl)
		if err := writeSpans(h.f, good[cs:cs+cl], cs); err != nil {
			s.resum(h, cs, cl)
			return nil, ioError("repair", h.oid, err)
		}
	}
	return bad, nil
}

// verifyFile checks data, the whole content of the object file at path,
// against the checksums in the file's xattr. A file without them passes.
func (s *Store) verifyFile(op string, oid uint64, path string, data []byte) error {
	if s.noSums {
		return nil
	}
	v := make([]byte, maxSumLen)
	n, err := unix.Getxattr(path, sumAttr, v)
	var m *sums
	switch {
	case err == unix.ENODATA:
		return nil
	case err == unix.ERANGE:
		err = errors.New("value too long")
	case err != nil:
		return ioError(op, oid, &os.PathError{Op: "getxattr", Path: path, Err: err})
	default:
		m, err = decodeSums(int64(len(data)), v[:n])
	}
	if err != nil {
		return damagedError(op, oid, err)
	}
	if m.unflushed() {
		// Written back and never flushed before it was set aside: its
		// chunks are whatever reached the disk (see checksum.go).
		return nil
	}
	if i, ok := m.verify(data); !ok {
		cs, cl := m.chunk(i)
		return checksumError(op, oid, i, cs, cl)
	}
	return nil
}
