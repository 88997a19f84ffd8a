package store

// Chunk checksums (docs/design.md §8 "Local store"). Every object file carries in
// its xattr user.sheepdog.crc the XXH3-64 of each fixed-size chunk of the
// object, truncated to its low 32 bits (the attribute keeps its name from
// version 1, which held CRC-32C values; see "Version 1" below). Reads
// verify the chunks they touch and never return bytes of a chunk that
// does not match; writes and punches update the checksums of the chunks
// they change; Verify and SHA1 check the whole object. A mismatch is an
// error wrapping ErrChecksum and proto.ResEIO, so a bad copy answers EIO
// on the wire and the gateway can repair it from another copy (Repair).
//
// Chunk size: the smallest power of two from 16 KiB up that gives the
// object at most 256 chunks, so the xattr never exceeds 2 KiB and fits,
// with room to spare, in the single 4 KiB block ext4 keeps a file's xattrs
// in. A 4 MiB data object gets 256 chunks of 16 KiB (a 2056-byte xattr), an
// inode (12 MiB) 193 of 64 KiB.
//
// Small xattrs. A filesystem whose xattrs cannot hold 2056 bytes (ext4
// with 1 KiB blocks keeps at most ~950 bytes per file, the size of the
// images Sheepdog's own test suite makes) gets fewer, larger chunks: Open
// probes the largest value the store dir takes (Store.maxChunks: 256,
// 128, 64, ... down to minChunks) and new objects get at most that many
// chunks, 64 of 64 KiB for a 4 MiB object there (a 520-byte xattr). The
// value, the write order, cur/prev and the unflushed flag are the same, so
// are the guarantees; what changes is the cost of a small read (a 4 KiB
// read hashes a 64 KiB chunk, ~6 µs against 1.7). The geometry is read
// from each value (decodeSums): an object keeps the layout it was written
// with when its store moves to another filesystem. The chunk is the unit a read must fetch
// and checksum, so small is cheap for small reads: a 4 KiB read costs a
// 16 KiB pread and hash from the page cache, about 1.7 µs against 0.8 µs
// unchecked (BenchmarkChecksumRead4KRandom; with CRC-32C it was 2 µs, and
// 6 µs with 64 KiB chunks); large reads cost the same either way.
//
// Hash: XXH3-64 (github.com/zeebo/xxh3), of which the low 32 bits are
// kept, so that the xattr layout is that of version 1. On 16 KiB chunks it
// runs at ~65 GB/s with AVX-512 against ~26 GB/s for CRC-32C with SSE4.2,
// and CRC-32C was ~23% of a sheep's CPU under sequential 1 MiB NBD writes.
// It gives up CRC-32C's guarantee to catch every error burst of up to 32
// bits; any other corruption either misses one time in 2^32. Unlike a
// CRC, XXH3 cannot be extended (crc(crc(0, a), b)): the checksum of a
// chunk is always the hash of the whole chunk. A partial write assembles
// the new chunk in the buffer its old bytes were read into (updateSums); a
// Create streams the zeros around its data and the data through one
// pooled xxh3.Hasher (sumsFor), which hashes them as their concatenation;
// the checksum of a zero chunk is cached per chunk size (zeroSum).
//
// Format of the xattr value, little-endian:
//
//	[0]   version (2; 1 is CRC-32C, converted when opened)
//	[1]   chunk shift: chunks are 1<<shift bytes, the last one shorter
//	[2]   flags: sumUnflushed
//	[3]   zero
//	[4:8] n, the number of chunks: ceil(size / chunk size)
//	then  cur[n]  u32: checksum of each chunk as last written
//	then  prev[n] u32: checksum of the chunk before that write
//
// A chunk verifies when its checksum equals cur or prev. The write order is
// xattr first, data second, so a process killed between the two leaves a
// chunk that still matches prev. What is not covered: a write torn inside
// its data (killed between the pages of one large pwrite, or a power cut
// before its sync returned) may leave a chunk matching neither; it was
// never acknowledged, and the chunk is then treated as bad like any other:
// repaired from another copy, or EIO with a single copy until rewritten.
// A chunk never written reads as zeros and its checksum is that of a zero
// chunk, known without reading (zeroSum): a sparse Create computes nothing
// over its holes.
//
// Durability. The xattr is metadata, and fdatasync need not persist it
// (ext4 commits the journal for a datasync only when the change is needed
// to read the data back, which an xattr is not). So a sync after the xattr
// changed is an fsync (handle.metaDirty), which commits the journal
// transaction holding the xattr together with the data flush; the synced
// 4 KiB write benchmark shows no difference against fdatasync without
// checksums, both being dominated by the device flush.
//
// Write-back (flush.go). A write without sync is acknowledged with its
// data in the page cache only, and the checksums of each write replace
// those of the one before: after a power cut, a chunk written since the
// last flush may hold bytes from any of those writes, or a mix, and
// match neither cur nor prev. That is what a disk with a write cache may
// return for unflushed sectors; it must not become an unreadable chunk.
// So the xattr carries the flag sumUnflushed while the object has
// changes not yet flushed: the first write without sync to a clean object
// sets it and makes it durable (an fsync, before the data is written, so
// that no unflushed byte can reach the disk ahead of the flag); later
// ones keep it at no cost; a flush clears it once the object is synced
// and nothing was written back since. A file opened with the flag set
// that this process did not flag (Store.unflushed) has been through a
// crash (or a power cut) with unflushed changes: settleUnflushed accepts
// its chunks as they are, recomputing the checksums of those that no
// longer match, and clears the flag. A Create without sync sets the flag
// in the xattr it creates, which is durable no later than the object's
// name.
//
// Version 1. Objects written before version 2 carry the same layout with
// CRC-32C values. loadSums converts them when they are opened
// (convertV1): every chunk is read and checked against its CRC-32C cur or
// prev; a chunk that matches gets the XXH3 checksum of the same bytes
// (cur = prev), and one that does not stays bad (badSum), so a bad v1
// copy is never blessed by the conversion. The v2 value is stored without
// a sync of its own: a crash before it is on disk leaves the v1 value,
// which converts again; every write after the conversion stores its
// checksums through the v2 value, and is acknowledged only after a sync
// (an fsync, as the xattr changed) or a mark that makes it durable. A v1
// object flagged unflushed and not flagged by this process is settled by
// the same pass: its chunks are taken as found. Stale copies are never
// rewritten; ReadStale verifies a v1 one with CRC-32C (sums.verify).
//
// Invariants: h.sums is changed only under h.mu held for writing, together
// with the data it describes; readers verify under h.mu held for reading.
// An object without the xattr (written before checksums existed, or copied
// in by hand) gets checksums of its current bytes when it is opened.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// ErrChecksum marks a stored copy whose bytes no longer match their
// checksums. Errors carrying it also wrap proto.ResEIO; callers that can
// repair the copy test for it with errors.Is.
var ErrChecksum = errors.New("checksum mismatch")

const (
	sumAttr       = "user.sheepdog.crc"
	sumVersion    = 2
	sumVersionCRC = 1 // CRC-32C values, converted when opened (convertV1)
	sumHeaderSize = 8
	sumFlags      = 2    // offset of the flags byte
	sumUnflushed  = 0x01 // the object has changes not yet flushed
	minChunkShift = 14   // 16 KiB
	maxChunkShift = 40   // beyond any object size
	maxChunks     = 256  // per object; larger objects get larger chunks
	minChunks     = 16   // the fewest a store may be limited to (Open)
	maxSumLen     = sumHeaderSize + 8*maxChunks
)

// sumAttrName is sumAttr NUL-terminated, for the allocation-free fsetxattr.
var sumAttrName = []byte(sumAttr + "\x00")

var le = binary.LittleEndian

// chunkSum is the checksum of the chunk p: the low 32 bits of its XXH3-64.
func chunkSum(p []byte) uint32 { return uint32(xxh3.Hash(p)) }

// chunkSumOrZero is chunkSum, taken from the cache of zero chunks
// (zeroSum) for a chunk of zeros: finding zeros is cheaper than hashing
// them, and whole objects of zeros (preallocated, sparse) are common.
func chunkSumOrZero(p []byte) uint32 {
	if isZero(p) {
		return zeroSum(int64(len(p)))
	}
	return chunkSum(p)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkSumV1 is the checksum of the chunk p in a version 1 value.
func chunkSumV1(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// hashers holds the streaming hashers of chunks assembled from pieces, so
// that computing their checksums allocates nothing. XXH3 cannot be
// extended piece by piece as a CRC can, but the pieces streamed through
// one hasher hash as their concatenation does.
var hashers = sync.Pool{New: func() any { return xxh3.New() }}

// getHasher returns a reset pooled hasher; sumHasher gives it back.
func getHasher() *xxh3.Hasher {
	h := hashers.Get().(*xxh3.Hasher)
	h.Reset()
	return h
}

// sumHasher is chunkSum of the bytes written to h, which goes back to the
// pool.
func sumHasher(h *xxh3.Hasher) uint32 {
	c := uint32(h.Sum64())
	hashers.Put(h)
	return c
}

// writeZeros streams n zero bytes into h from the shared zeros.
func writeZeros(h *xxh3.Hasher, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// zeroSums caches the checksum of a whole zero chunk per chunk shift; bit
// 32 marks a computed entry.
var zeroSums [32]atomic.Uint64

// zeroSum is the checksum of n zero bytes, cached for whole chunks.
func zeroSum(n int64) uint32 {
	if n <= 0 || n&(n-1) != 0 || n < 1<<minChunkShift || n > 1<<31 {
		h := getHasher()
		writeZeros(h, n)
		return sumHasher(h)
	}
	e := &zeroSums[bits.TrailingZeros64(uint64(n))]
	if v := e.Load(); v>>32 != 0 {
		return uint32(v)
	}
	h := getHasher()
	writeZeros(h, n)
	c := sumHasher(h)
	e.Store(1<<32 | uint64(c))
	return c
}

// badSum is the checksum stored for a chunk that must keep failing its
// check although its checksum is recomputed (convertV1): c, the checksum
// of the chunk's current bytes, with its low bit flipped. Those bytes then
// never match, and other bytes only with the chance of any checksum
// collision; so the chunk behaves as a bad chunk of version 2 would: reads
// and partial writes fail with ErrChecksum, Repair or a write of the whole
// chunk replaces it.
func badSum(c uint32) uint32 { return c ^ 1 }

// chunkShiftFor is the chunk shift of an object of size bytes split in at
// most maxN chunks.
func chunkShiftFor(size int64, maxN int) uint8 {
	shift := uint8(minChunkShift)
	for (size+1<<shift-1)>>shift > int64(maxN) {
		shift++
	}
	return shift
}

// sums are the chunk checksums of one object, kept as the encoded xattr
// value so that an update is a copy, a few stores and one fsetxattr.
type sums struct {
	shift uint8
	n     int
	size  int64
	b     []byte // the xattr value
	spare []byte // staging copy for the next update (stage, commit)
}

// newSums returns zeroed checksums for an object of size bytes in at most
// maxN chunks.
func newSums(size int64, maxN int) *sums {
	return newSumsShift(size, chunkShiftFor(size, maxN))
}

// newSumsShift returns zeroed checksums for an object of size bytes in
// chunks of 1<<shift bytes.
func newSumsShift(size int64, shift uint8) *sums {
	n := int((size + 1<<shift - 1) >> shift)
	m := &sums{shift: shift, n: n, size: size,
		b: make([]byte, sumHeaderSize+8*n), spare: make([]byte, sumHeaderSize+8*n)}
	m.b[0], m.b[1] = sumVersion, shift
	le.PutUint32(m.b[4:], uint32(n))
	return m
}

// sumsFor computes the checksums, in at most maxN chunks, of a fresh
// object of size bytes that is zero except for data at off.
func sumsFor(size, off int64, data []byte, maxN int) *sums {
	m := newSums(size, maxN)
	end := off + int64(len(data))
	for i := range m.n {
		cs, cl := m.chunk(i)
		ws, we := max(off, cs), min(end, cs+cl)
		var c uint32
		switch {
		case ws >= we:
			c = zeroSum(cl)
		case ws == cs && we == cs+cl:
			c = chunkSumOrZero(data[ws-off : we-off])
		default:
			h := getHasher()
			writeZeros(h, ws-cs)
			h.Write(data[ws-off : we-off])
			writeZeros(h, cs+cl-we)
			c = sumHasher(h)
		}
		m.set(m.b, i, c, c)
	}
	return m
}

// decodeSums returns the checksums stored as v for an object of size
// bytes, in the geometry v names: any chunk size from 16 KiB up that
// splits the object in at most maxChunks chunks (see "Small xattrs").
func decodeSums(size int64, v []byte) (*sums, error) {
	if len(v) < sumHeaderSize {
		return nil, fmt.Errorf("%d bytes, shorter than its header", len(v))
	}
	shift := v[1]
	if shift < minChunkShift || shift > maxChunkShift {
		return nil, fmt.Errorf("chunks of 2^%d bytes", shift)
	}
	m := newSumsShift(size, shift)
	if m.n > maxChunks {
		return nil, fmt.Errorf("%d chunks of 2^%d bytes, more than %d", m.n, shift, maxChunks)
	}
	copy(m.b, v)
	return m, m.valid(len(v))
}

// valid checks a value read into m.b (n bytes of it) against m's geometry.
func (m *sums) valid(n int) error {
	switch {
	case n != len(m.b):
		return fmt.Errorf("%d bytes, want %d", n, len(m.b))
	case m.b[0] != sumVersion && m.b[0] != sumVersionCRC:
		return fmt.Errorf("version %d", m.b[0])
	case m.b[1] != m.shift || le.Uint32(m.b[4:]) != uint32(m.n):
		return fmt.Errorf("%d chunks of 2^%d bytes, want %d of 2^%d", le.Uint32(m.b[4:]), m.b[1], m.n, m.shift)
	}
	return nil
}

// chunk is the byte range of chunk i.
func (m *sums) chunk(i int) (off, n int64) {
	off = int64(i) << m.shift
	return off, min(1<<m.shift, m.size-off)
}

// unflushed reports whether the flag sumUnflushed is set.
func (m *sums) unflushed() bool { return m.b[sumFlags]&sumUnflushed != 0 }

func (m *sums) cur(i int) uint32  { return le.Uint32(m.b[sumHeaderSize+4*i:]) }
func (m *sums) prev(i int) uint32 { return le.Uint32(m.b[sumHeaderSize+4*(m.n+i):]) }

// matches reports whether c is a valid checksum of chunk i.
func (m *sums) matches(i int, c uint32) bool { return c == m.cur(i) || c == m.prev(i) }

// set stores chunk i's checksums into b, an encoded value of m's geometry.
func (m *sums) set(b []byte, i int, cur, prev uint32) {
	le.PutUint32(b[sumHeaderSize+4*i:], cur)
	le.PutUint32(b[sumHeaderSize+4*(m.n+i):], prev)
}

// stage returns a copy of the value to change; commit makes it current
// once it is stored.
func (m *sums) stage() []byte { copy(m.spare, m.b); return m.spare }
func (m *sums) commit()       { m.b, m.spare = m.spare, m.b }

// neverWritten reports whether every chunk [off, off+n) touches reads as
// never written: zeros, by its checksum (a hole, or zeros written over
// one, which is the same to a reader). The range is not empty.
func (m *sums) neverWritten(off, n int64) bool {
	whole := zeroSum(1 << m.shift) // cached; a shorter last chunk is hashed
	for i := int(off >> m.shift); i <= int((off+n-1)>>m.shift); i++ {
		zs := whole
		if _, cl := m.chunk(i); cl != 1<<m.shift {
			zs = zeroSum(cl)
		}
		if m.cur(i) != zs {
			return false
		}
	}
	return true
}

// verify checks data, the whole object, and returns the first bad chunk.
// It also checks a version 1 value, as a stale copy may carry one.
func (m *sums) verify(data []byte) (int, bool) {
	sum := chunkSum
	if m.b[0] == sumVersionCRC {
		sum = chunkSumV1
	}
	if m.b[0] != sumVersionCRC {
		sum = chunkSumOrZero
	}
	for i := range m.n {
		cs, cl := m.chunk(i)
		if !m.matches(i, sum(data[cs:cs+cl])) {
			return i, false
		}
	}
	return 0, true
}

// chunkBufs holds chunk-sized read buffers (16 KiB, grown on demand).
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 1<<minChunkShift); return &b }}

// getChunkBuf returns a pooled buffer of at least n bytes; give it back
// with chunkBufs.Put.
func getChunkBuf(n int64) *[]byte {
	p := chunkBufs.Get().(*[]byte)
	if int64(cap(*p)) < n {
		*p = make([]byte, n)
	}
	return p
}

func checksumError(op string, oid uint64, i int, off, n int64) error {
	return fmt.Errorf("store: %s %016x: chunk %d [%d,+%d): %w: %w", op, oid, i, off, n, ErrChecksum, proto.ResEIO)
}

// damagedError reports a checksum xattr that cannot be used: the copy
// cannot be verified, so it is treated as bad.
func damagedError(op string, oid uint64, why error) error {
	return fmt.Errorf("store: %s %016x: checksum attribute damaged (%v): %w: %w", op, oid, why, ErrChecksum, proto.ResEIO)
}

// fsetxattr stores value as the checksum xattr of fd without allocating.
func fsetxattr(fd int, value []byte) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_FSETXATTR, uintptr(fd),
			uintptr(unsafe.Pointer(&sumAttrName[0])), uintptr(unsafe.Pointer(&value[0])),
			uintptr(len(value)), 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
}

// loadSums reads the checksums of a freshly opened object file (the file
// cache's load hook). An object without them gets them from its current
// bytes; a damaged value is returned as an ErrChecksum error, which the
// handle then reports on every checked operation.
func (s *Store) loadSums(oid uint64, f *os.File, size int64) (*sums, error) {
	if s.noSums {
		return nil, nil
	}
	v := make([]byte, maxSumLen)
	fd := int(f.Fd())
	var n int
	err := ignoringEINTR(func() (err error) { n, err = unix.Fgetxattr(fd, sumAttr, v); return err })
	var m *sums
	switch {
	case err == unix.ENODATA:
		return s.adoptSums(oid, f, newSums(size, s.maxChunks))
	case err == unix.ERANGE:
		err = errors.New("value too long")
	case err != nil:
		return nil, ioError("read checksums of", oid, err)
	default:
		m, err = decodeSums(size, v[:n])
	}
	if err != nil {
		return nil, damagedError("open", oid, err)
	}
	settle := m.unflushed() && !s.unflushed.has(oid)
	if m.b[0] == sumVersionCRC {
		return s.convertV1(oid, f, m, settle)
	}
	if settle {
		s.settleUnflushed(oid, f, m)
	}
	return m, nil
}

// convertV1 is loadSums for a version 1 value (CRC-32C): it checks every
// chunk against its CRCs and returns the version 2 value of the same
// bytes, stored as the xattr (see "Version 1" above). A chunk that fails
// its check gets badSum; with settle (the object had unflushed changes
// when this store last stopped), chunks are taken as found instead, as
// settleUnflushed does, and the flag is cleared. A read error leaves the
// v1 value on disk for the next open to convert.
func (s *Store) convertV1(oid uint64, f *os.File, m *sums, settle bool) (*sums, error) {
	bp := getChunkBuf(1 << m.shift)
	defer chunkBufs.Put(bp)
	var bad []int
	for i := range m.n {
		cs, cl := m.chunk(i)
		p := (*bp)[:cl]
		if _, err := f.ReadAt(p, cs); err != nil {
			return nil, ioError("convert checksums of", oid, err)
		}
		c := chunkSum(p)
		if !settle && !m.matches(i, chunkSumV1(p)) {
			c = badSum(c)
			bad = append(bad, i)
		}
		m.set(m.b, i, c, c)
	}
	m.b[0] = sumVersion
	if settle {
		m.b[sumFlags] &^= sumUnflushed
	}
	if m.n > 0 {
		if err := fsetxattr(int(f.Fd()), m.b); err != nil {
			s.log.Warn("cannot store checksums", "oid", fmt.Sprintf("%016x", oid), "err", err)
		}
	}
	if len(bad) > 0 {
		s.log.Warn("converted CRC-32C checksums; chunks that failed them stay bad",
			"oid", fmt.Sprintf("%016x", oid), "chunks", bad)
	} else {
		s.log.Debug("converted CRC-32C checksums", "oid", fmt.Sprintf("%016x", oid), "settled", settle)
	}
	return m, nil
}

// settleUnflushed is loadSums for an object whose changes were not all
// flushed when this store last stopped (a crash or a power cut): every
// chunk that does not match its checksums is taken as it is, and the
// flag is cleared (see "Write-back" above).
func (s *Store) settleUnflushed(oid uint64, f *os.File, m *sums) {
	bp := getChunkBuf(1 << m.shift)
	defer chunkBufs.Put(bp)
	var kept []int
	for i := range m.n {
		cs, cl := m.chunk(i)
		if _, err := f.ReadAt((*bp)[:cl], cs); err != nil {
			return // stays flagged: the next open tries again
		}
		if c := chunkSum((*bp)[:cl]); !m.matches(i, c) {
			m.set(m.b, i, c, c)
			kept = append(kept, i)
		}
	}
	m.b[sumFlags] &^= sumUnflushed
	if err := fsetxattr(int(f.Fd()), m.b); err != nil {
		s.log.Warn("cannot store checksums", "oid", fmt.Sprintf("%016x", oid), "err", err)
	}
	if len(kept) > 0 {
		s.log.Warn("object had unflushed writes when the store stopped; kept its chunks as found",
			"oid", fmt.Sprintf("%016x", oid), "chunks", kept)
	}
}

// adoptSums computes and stores checksums for an object that has none.
func (s *Store) adoptSums(oid uint64, f *os.File, m *sums) (*sums, error) {
	bp := getChunkBuf(1 << m.shift)
	defer chunkBufs.Put(bp)
	for i := range m.n {
		cs, cl := m.chunk(i)
		if _, err := f.ReadAt((*bp)[:cl], cs); err != nil {
			return nil, ioError("compute checksums of", oid, err)
		}
		c := chunkSum((*bp)[:cl])
		m.set(m.b, i, c, c)
	}
	if m.n > 0 {
		if err := fsetxattr(int(f.Fd()), m.b); err != nil {
			s.log.Warn("cannot store checksums", "oid", fmt.Sprintf("%016x", oid), "err", err)
		}
	}
	s.log.Info("object had no checksums; computed them from its current bytes", "oid", fmt.Sprintf("%016x", oid))
	return m, nil
}

// readChecked fills buf from h at off, verifying every chunk it touches:
// runs of whole chunks are read straight into buf (and cleared again if
// one is bad), partial chunks through a pooled buffer. With nowait, every
// pread is preadNoWait's, and errWouldBlock says a byte was not in the
// page cache. The caller holds h.mu for reading and has checked the range.
func (s *Store) readChecked(h *handle, op string, buf []byte, off int64, nowait bool) error {
	m := h.sums
	end := off + int64(len(buf))
	for pos := off; pos < end; {
		i := int(pos >> m.shift)
		cs, cl := m.chunk(i)
		if pos == cs && end >= cs+cl {
			j, runEnd := i+1, cs+cl
			for ; j < m.n; j++ {
				js, jl := m.chunk(j)
				if js+jl > end {
					break
				}
				runEnd = js + jl
			}
			p := buf[pos-off : runEnd-off]
			var err error
			if nowait {
				err = preadNoWait(h.fd, p, pos)
			} else {
				err = readSparse(h.f, h.fd, p, pos)
			}
			if err != nil {
				return ioError(op, h.oid, err)
			}
			for k := i; k < j; k++ {
				ks, kl := m.chunk(k)
				if !m.matches(k, chunkSumOrZero(p[ks-pos:ks-pos+kl])) {
					clear(p) // no bad byte reaches a careless caller
					return checksumError(op, h.oid, k, ks, kl)
				}
			}
			pos = runEnd
			continue
		}
		bp := getChunkBuf(cl)
		c := (*bp)[:cl]
		var err error
		if nowait {
			err = preadNoWait(h.fd, c, cs)
		} else {
			_, err = h.f.ReadAt(c, cs)
		}
		if err != nil {
			err = ioError(op, h.oid, err)
		} else if !m.matches(i, chunkSum(c)) {
			err = checksumError(op, h.oid, i, cs, cl)
		} else {
			ce := min(end, cs+cl)
			copy(buf[pos-off:], c[pos-cs:ce-cs])
			pos = ce
		}
		chunkBufs.Put(bp)
		if err != nil {
			return err
		}
	}
	return nil
}

// updateSums stores the checksums the chunks touched by [off, off+n) will
// have once data (n zero bytes when data is nil) is written there. A
// partially covered chunk is read, verified and combined with the new
// bytes: a write never blesses a chunk that was already bad. (A chunk
// never written is not read: its bytes are zeros.) For a write
// without sync, the xattr is flagged unflushed, durably before the data
// if it was not already. The caller holds h.mu and writes the data next.
func (s *Store) updateSums(h *handle, op string, off, n int64, data []byte, sync bool) error {
	m := h.sums
	end := off + n
	b := m.stage()
	for i := int(off >> m.shift); i <= int((end-1)>>m.shift); i++ {
		cs, cl := m.chunk(i)
		ws, we := max(off, cs), min(end, cs+cl)
		var c, prev uint32
		if ws == cs && we == cs+cl {
			c, prev = wholeSum(data, ws-off, we-off), m.cur(i)
		} else if zs := zeroSum(cl); m.cur(i) == zs && m.prev(i) == zs {
			// A chunk never written (or zeroed twice): zeros are the
			// only bytes it may hold, in any state a crash can leave, so
			// the new chunk is the write between zeros and needs no read
			// (the read of a hole is most of a first 4 KiB write's
			// cost). A chunk whose bytes differ all the same was bad
			// already and fails its next read, as it would have here.
			c, prev = sumBetweenZeros(data, off, cs, cl, ws, we), zs
		} else if h.written.zero(cs, ws-cs) && h.written.zero(we, cs+cl-we) {
			// Zeros around the write (written.go): the chunk as it
			// will be needs no read. Its bytes before the write are
			// those cur describes, as for a whole chunk.
			c, prev = sumBetweenZeros(data, off, cs, cl, ws, we), m.cur(i)
		} else {
			bp := getChunkBuf(cl)
			old := (*bp)[:cl]
			err := s.readOld(h, old, cs)
			if err == nil {
				prev = chunkSum(old)
				// The chunk as it will be, assembled where it was
				// read: no hasher to take from a pool.
				if data != nil {
					copy(old[ws-cs:we-cs], data[ws-off:we-off])
				} else {
					clear(old[ws-cs : we-cs])
				}
				c = chunkSum(old)
			}
			chunkBufs.Put(bp)
			if err != nil {
				return ioError(op, h.oid, err)
			}
			if !m.matches(i, prev) {
				return checksumError(op, h.oid, i, cs, cl)
			}
		}
		m.set(b, i, c, prev)
	}
	mark := !sync && !m.unflushed()
	if !sync {
		b[sumFlags] |= sumUnflushed
		h.unflushedGen++
	}
	if !sync && !mark {
		// The flag is durable already: the checksums stay in memory
		// until the next sync of the object or the close of its
		// handle (persistSums). A crash before then is settled.
		m.commit()
		h.sumsDirty.Store(true)
		return nil
	}
	if mark {
		s.unflushed.add(h.oid)
	}
	if err := fsetxattr(h.fd, b); err != nil {
		return ioError(op, h.oid, err)
	}
	m.commit()
	h.sumsDirty.Store(false)
	h.metaDirty.Store(true)
	if mark && !s.noSync {
		// The object was clean: nothing but this xattr to sync.
		s.stats.marks.Add(1)
		if err := s.syncFile(h.oid, true, func() error { return unix.Fsync(h.fd) }); err != nil {
			// The flag is not known durable: the next write marks again.
			m.b[sumFlags] &^= sumUnflushed
			return ioError(op, h.oid, &os.PathError{Op: "fsync", Path: h.f.Name(), Err: err})
		}
	}
	return nil
}

// persistSums stores the checksums h keeps in memory only (those of
// write-back writes made while the object was flagged unflushed), before
// a sync of h or the close of its handle. Until they are stored, the
// durable unflushed flag covers the chunks they describe: a crash makes
// the next open accept those chunks as found (settleUnflushed). Stored,
// they make the next sync an fsync, which puts them on disk with the
// data. The caller holds a reference on h, not h.mu.
func (s *Store) persistSums(h *handle) error {
	if !h.sumsDirty.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.sumsDirty.Load() || h.sums == nil {
		return nil
	}
	if err := fsetxattr(h.fd, h.sums.b); err != nil {
		return &os.PathError{Op: "fsetxattr", Path: h.f.Name(), Err: err}
	}
	h.sumsDirty.Store(false)
	h.metaDirty.Store(true)
	return nil
}

// clearUnflushed clears h's unflushed flag after a flush synced h, unless
// a write without sync came after gen, the count of such writes read
// before that sync. The cleared xattr needs no sync of its own: until it
// is on disk, the flag only makes a crash recovery accept chunks that
// already verify.
func (s *Store) clearUnflushed(h *handle, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.sums
	if m == nil || h.sumsErr != nil || !m.unflushed() || h.unflushedGen != gen {
		return
	}
	b := m.stage()
	b[sumFlags] &^= sumUnflushed
	if fsetxattr(h.fd, b) == nil {
		m.commit()
		h.sumsDirty.Store(false)
		h.metaDirty.Store(true)
		s.unflushed.remove(h.oid)
	}
}

// wholeSum is the checksum of a whole chunk written as data[a:b], or
// punched (b-a zeros) when data is nil.
func wholeSum(data []byte, a, b int64) uint32 {
	if data == nil {
		return zeroSum(b - a)
	}
	return chunkSum(data[a:b])
}

// resum recomputes the checksums of the chunks touched by [off, off+n)
// from the file, after a data write there failed half-way: the chunk then
// holds what the filesystem kept, and stays readable. Best effort; the
// caller holds h.mu.
func (s *Store) resum(h *handle, off, n int64) {
	m := h.sums
	b := m.stage()
	bp := getChunkBuf(1 << m.shift)
	defer chunkBufs.Put(bp)
	for i := int(off >> m.shift); i <= int((off+n-1)>>m.shift); i++ {
		cs, cl := m.chunk(i)
		if _, err := h.f.ReadAt((*bp)[:cl], cs); err != nil {
			return
		}
		c := chunkSum((*bp)[:cl])
		m.set(b, i, c, c)
	}
	if fsetxattr(h.fd, b) == nil {
		m.commit()
		h.sumsDirty.Store(false)
		h.metaDirty.Store(true)
	}
}

// sumBetweenZeros is the checksum of the chunk [cs, cs+cl) holding
// data[ws-off:we-off] at [ws, we) and zeros around it; of zeros only when
// data is nil (a punch).
func sumBetweenZeros(data []byte, off, cs, cl, ws, we int64) uint32 {
	if data == nil {
		return zeroSum(cl)
	}
	h := getHasher()
	writeZeros(h, ws-cs)
	h.Write(data[ws-off : we-off])
	writeZeros(h, cs+cl-we)
	return sumHasher(h)
}

// change writes data (or punches n bytes when data is nil) at off in h,
// keeping the checksums; sync says whether the caller syncs it before
// returning. The range is checked and not empty.
func (s *Store) change(h *handle, op string, off, n int64, data []byte, sync bool) error {
	if h.sums == nil && h.sumsErr == nil {
		return s.changeData(h, op, off, n, data, s.goesDirect(h, data, off))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sumsErr != nil {
		return h.sumsErr
	}
	direct := s.goesDirect(h, data, off) // before updateSums
	if err := s.updateSums(h, op, off, n, data, sync); err != nil {
		return err
	}
	if data != nil {
		h.written.add(off, n)
	}
	if err := s.changeData(h, op, off, n, data, direct); err != nil {
		s.resum(h, off, n)
		return err
	}
	return nil
}

// changeData writes data (or punches n bytes when data is nil) at off in
// h; direct says that the mode sends data direct and O_DIRECT allows it
// (direct.go).
func (s *Store) changeData(h *handle, op string, off, n int64, data []byte, direct bool) error {
	var err error
	if direct && s.writeDirect(&h.direct, h.fd, data, off) {
		return nil
	}
	if data != nil {
		err = writeBuffered(h.f, h.fd, data, off)
	} else {
		err = s.punch(h, off, n)
	}
	if err != nil {
		return ioError(op, h.oid, err)
	}
	return nil
}
