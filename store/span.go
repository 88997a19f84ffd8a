package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Page-cache folio size of object data.
//
// Linux (6.x, ext4 among others) puts a buffered write into page-cache
// folios as large as the write allows: one pwrite of 1 MiB at an aligned
// offset makes 1 MiB (up to 2 MiB) folios. A later small write into such
// a folio costs in proportion to the folio, not to the write: ext4's
// ext4_block_write_begin walks every block buffer of the folio on each
// write. So a big write into an object is issued as pwrites of at most
// writeSpan bytes, each ending on a writeSpan boundary, and the folios it
// makes stay at most writeSpan long. (Folios that readahead makes when a
// cold object is read sequentially can still be large.) writeSpan is the
// checksum chunk's usual size, so the read-back of a partly written
// chunk (readOld) reads one folio.
//
// Measured on the development machine (kernel 6.18): with 1 MiB folios,
// fio psync 4 KiB random overwrites cost 35–45 µs of system time each,
// 9–10 µs with 64 KiB ones (session 10, which chose 64 KiB). With 64 KiB
// folios, under 4 KiB random overwrites on 3 nodes with 3 copies,
// ext4_block_write_begin alone was 12% of a replica's CPU (perf), and
// did not appear under first writes (4 KiB folios). 16 KiB spans
// against 64 KiB, 3 nodes, 4 rounds in alternating order after a fill
// and one sequential overwrite: random 4 KiB overwrites 25.8–32.6K IOPS
// against 22.4–26.9K, as fast as first writes instead of 10–25% slower;
// sequential 1 MiB overwrites 3–7% slower (more folios a MiB), reads
// unchanged. A write whose pages are all cached makes no folio, so it
// goes as one pwrite (writeBuffered): with 16 KiB spans throughout,
// sequential overwrites ran 9–17% slower in three rounds of four.
const writeSpan = 16 << 10

// writeBuffered writes data at off in f (fd its descriptor) through the
// page cache: as one pwrite when the range is larger than a span and
// every page of it is cached already (the write then makes no folio and
// the spans would only cost system calls), else as writeSpans.
func writeBuffered(f *os.File, fd int, data []byte, off int64) error {
	if len(data) > writeSpan && allCached(fd, off, int64(len(data))) {
		_, err := f.WriteAt(data, off)
		return err
	}
	return writeSpans(f, data, off)
}

// noCachestat is set once cachestat(2) (Linux 6.5) is found missing.
var noCachestat atomic.Bool

// allCached reports whether every page of [off, off+n) of fd is in the
// page cache; false when that is not known.
func allCached(fd int, off, n int64) bool {
	if noCachestat.Load() {
		return false
	}
	var cs unix.Cachestat_t
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	if err := unix.Cachestat(uint(fd), &r, &cs, 0); err != nil {
		if err == unix.ENOSYS {
			noCachestat.Store(true)
		}
		return false
	}
	first, last := off/cachePage, (off+n-1)/cachePage
	return cs.Cache >= uint64(last-first+1)
}

// cachePage is the page cache's page, what cachestat counts.
var cachePage = int64(os.Getpagesize())

// writeSpans writes data at off in w (an object's *os.File) as pwrites of at most writeSpan
// bytes that do not cross a writeSpan boundary. Like os.File.WriteAt it
// returns the first error; the bytes before it are written. Splitting a
// write changes nothing a caller may rely on: one pwrite is not atomic
// either, against a crash or a concurrent reader.
func writeSpans(w io.WriterAt, data []byte, off int64) error {
	for len(data) > 0 {
		n := min(int64(len(data)), writeSpan-off%writeSpan)
		if _, err := w.WriteAt(data[:n], off); err != nil {
			return err
		}
		data, off = data[n:], off+n
	}
	return nil
}

// isZero reports whether p is all zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// writeFreshSpans is writeSpans into a fresh file, sized and empty (a hole,
// or space allocated as zeros, where data goes): only the runs of
// non-zero pages are written (nonZeroRuns), as the zero pages read as
// zeros already. A copy that is mostly zeros (a preallocated or sparse
// object copied in whole by recovery) then costs neither the copying of
// its zeros into the page cache nor their writeback; an inode keeps its
// holes, as Sheepdog's store trims zeros off what it writes.
func writeFreshSpans(w io.WriterAt, data []byte, off int64) error {
	return nonZeroRuns(data, off, func(lo, hi int64) error { return writeSpans(w, data[lo:hi], off+lo) })
}

// zeroPage is the granularity fresh writes skip zeros at.
const zeroPage = 4096

// nonZeroRuns calls f with each maximal run [lo, hi) of data (which sits
// at off in its object) made of pages (zeroPage-aligned in the object,
// cut at data's ends) that are not all zero, in order, and stops at f's
// first error.
func nonZeroRuns(data []byte, off int64, f func(lo, hi int64) error) error {
	n := int64(len(data))
	pageEnd := func(i int64) int64 { return min(n, (off+i)/zeroPage*zeroPage+zeroPage-off) }
	for i := int64(0); i < n; {
		e := pageEnd(i)
		if isZero(data[i:e]) {
			i = e
			continue
		}
		j := e
		for j < n {
			k := pageEnd(j)
			if isZero(data[j:k]) {
				break
			}
			j = k
		}
		if err := f(i, j); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// sparseMin is the smallest read that asks the filesystem where the file
// holds data first (readSparse). Below it the two lseeks cost more than
// the zero pages they might save.
const sparseMin = 256 << 10

// readSparse reads len(p) bytes at off from f, whose descriptor is fd,
// as f.ReadAt does, except that a read of sparseMin bytes or more reads
// only the ranges the filesystem reports as data (lseek SEEK_DATA and
// SEEK_HOLE) and clears the rest of p. Holes and space allocated but
// never written (fallocate, as every data object is created) read as
// zeros without the kernel filling page-cache pages with zeros for them:
// measured on the development machine, reading a preallocated 4 MiB
// object that way took 130-230 ms under memory pressure (the page cache
// full, each new page costing reclaim), and a node joining a cluster
// reads every object it takes over whole. A filesystem without
// SEEK_DATA reports the whole file as data, which is a plain read.
//
// The descriptor's file offset moves; every read and write of an object
// is positional (pread, pwrite), so nothing depends on it.
func readSparse(f *os.File, fd int, p []byte, off int64) error {
	if len(p) < sparseMin {
		_, err := f.ReadAt(p, off)
		return err
	}
	end := off + int64(len(p))
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end // no data from pos to the end of the file
		} else if err != nil {
			_, err := f.ReadAt(p[pos-off:], pos)
			return err
		}
		data = min(data, end)
		clear(p[pos-off : data-off])
		if data == end {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = end
		}
		hole = min(hole, end)
		if _, err := f.ReadAt(p[data-off:hole-off], data); err != nil {
			return err
		}
		pos = hole
	}
	return nil
}

// errWouldBlock is preadNoWait's answer for bytes not all in the page
// cache.
var errWouldBlock = errors.New("store: read would wait for the disk")

// preadNoWait fills p from fd at off only from the page cache (preadv2
// with RWF_NOWAIT): errWouldBlock when any of it is not there (EAGAIN, or
// a short read: part of it cached), or when the kernel has no RWF_NOWAIT
// for the file (EOPNOTSUPP).
func preadNoWait(fd int, p []byte, off int64) error {
	iov := [1][]byte{p}
	n, err := unix.Preadv2(fd, iov[:], off, unix.RWF_NOWAIT)
	switch {
	case err == nil && n == len(p):
		return nil
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EOPNOTSUPP):
		return errWouldBlock
	}
	return err
}
