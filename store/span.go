package store

import (
	"bytes"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Page-cache folio size of object data.
//
// Linux (6.x, ext4 among others) puts a buffered write into page-cache
// folios as large as the write allows: one pwrite of 1 MiB at an aligned
// offset makes 1 MiB (up to 2 MiB) folios. A later small write into such
// a folio costs in proportion to the folio, not to the write: ext4 walks
// every block buffer of the folio on each write. Measured on the
// development machine (fio psync, 60000 random 4 KiB overwrites of a
// 256 MiB file, system time): 35–45 µs a write into a file written with
// 1 MiB writes, 9–10 µs with 64 KiB writes, 6–7 µs with 16 KiB writes;
// writing the file sequentially cost the same system time with 64 KiB
// writes as with 1 MiB ones. A replicated 4 KiB overwrite pays that once
// per copy, and a system call that long also makes the Go runtime hand
// its P to another thread (sysmon retakes a P in a syscall after 20 µs),
// so a big write into an object is issued as pwrites of at most
// writeSpan bytes, each ending on a writeSpan boundary: the folios it
// makes stay at most writeSpan long. (Folios that readahead makes when a
// cold object is read sequentially can still be large.)
const writeSpan = 64 << 10

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
// or space allocated as zeros, where data goes): the zero pages at the
// ends of each span, and spans that are all zero, are not written, as
// they read as zeros already. A copy
// that is mostly zeros (a preallocated or sparse object copied in whole
// by recovery) then costs neither the copying of its zeros into the page
// cache nor their writeback; an inode keeps its holes, as Sheepdog's
// store trims zeros off what it writes.
func writeFreshSpans(w io.WriterAt, data []byte, off int64) error {
	for len(data) > 0 {
		n := min(int64(len(data)), writeSpan-off%writeSpan)
		if lo, hi := trimZeroPages(data[:n], off); lo < hi {
			if _, err := w.WriteAt(data[lo:hi], off+lo); err != nil {
				return err
			}
		}
		data, off = data[n:], off+n
	}
	return nil
}

// zeroPage is the granularity writeFreshSpans trims zeros at.
const zeroPage = 4096

// trimZeroPages returns the part [lo, hi) of p (which sits at off) left
// once the whole zero pages (zeroPage-aligned in the object) at both its
// ends are cut off; lo == hi when p is all zero.
func trimZeroPages(p []byte, off int64) (lo, hi int64) {
	hi = int64(len(p))
	for lo < hi {
		e := min(hi, (off+lo)/zeroPage*zeroPage+zeroPage-off)
		if !isZero(p[lo:e]) {
			break
		}
		lo = e
	}
	for hi > lo {
		b := max(lo, (off+hi-1)/zeroPage*zeroPage-off)
		if !isZero(p[b:hi]) {
			break
		}
		hi = b
	}
	return lo, hi
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
