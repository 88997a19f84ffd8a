package store

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct writes (Config.Direct; sheep --direct, and -D as Sheepdog's
// "direct IO for the backend store").
//
// A buffered write puts every byte into a page-cache page first, and a
// first write needs new pages. Where taking a page is expensive (measured
// on the development VM, which hands freed memory back to its host at
// once: a 3-node first write spent 45% of the CPU copying into new pages,
// at about 600 MB/s), a write that goes to the disk from our own buffer
// is cheaper and its latency steadier. The cost: what was written is not
// in the page cache, so the first read of it goes to the disk, and so does
// the read of the chunk around a later small write into it.
//
// Which writes (DirectMode). By default only first writes go direct:
// those into chunks never written (their checksum is that of a zero
// chunk), a new object's data, and so the writes of an image import, of
// new data in a guest, of recovery. Those are the writes that need new
// pages, and the data least likely to be read back soon (a guest caches
// what it reads itself). Overwrites stay in the page cache, where a
// rewrite of hot data and the small writes that need their chunk's old
// bytes find them. Ceph's BlueStore goes further and caches no write by
// default (bluestore_default_buffered_write). DirectAll (sheep -D) sends
// every write it can direct; DirectOff none.
//
// Only what O_DIRECT allows goes direct: runs of whole directAlign
// blocks at aligned offsets, from an aligned buffer, of at least
// directMin bytes. The rest, reads, repairs and punches go through the
// page cache as with DirectOff. Linux keeps the two coherent: a direct
// write first writes back and then drops the cached pages it overlaps.
// Durability is unchanged: a direct write is on the device, not yet
// stable (its volatile cache, the extent conversion of a preallocated
// object), until the same fdatasync that makes a buffered write stable.

// DirectMode says which object writes go direct.
type DirectMode uint8

const (
	DirectFresh DirectMode = iota // first writes only (the default)
	DirectAll                     // every write that can (sheep -D)
	DirectOff                     // none: every write through the page cache
)

// ParseDirectMode parses a mode's name: "fresh", "all" or "off".
func ParseDirectMode(s string) (DirectMode, error) {
	for m, name := range directModeNames {
		if s == name {
			return DirectMode(m), nil
		}
	}
	return 0, fmt.Errorf("direct IO mode %q: want fresh, all or off", s)
}

var directModeNames = [...]string{DirectFresh: "fresh", DirectAll: "all", DirectOff: "off"}

func (m DirectMode) String() string {
	if int(m) < len(directModeNames) {
		return directModeNames[m]
	}
	return fmt.Sprintf("DirectMode(%d)", m)
}

const (
	directAlign = 4096     // offset, length and buffer alignment O_DIRECT needs here
	directMin   = 64 << 10 // smaller writes are cheaper through the page cache
)

// directFD is an inode's O_DIRECT descriptor, opened on first use: 0
// not tried yet, -1 unavailable, otherwise the descriptor plus one. The
// zero value is ready to use.
type directFD struct{ v atomic.Int64 }

// get returns the O_DIRECT descriptor of the inode open as fd, opening it
// on first use; -1 when there is none.
func (d *directFD) get(s *Store, fd int) int {
	if v := d.v.Load(); v != 0 {
		return int(max(v, 0)) - 1
	}
	// The inode fd has open, whatever its name is now (a Create's
	// temporary file, or one renamed to .stale).
	dfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		return -1 // out of descriptors for now: this write is buffered
	}
	if err != nil {
		s.noDirect("open with O_DIRECT", err)
		d.v.CompareAndSwap(0, -1)
		return -1
	}
	if !d.v.CompareAndSwap(0, int64(dfd)+1) {
		unix.Close(dfd) // another writer opened one first
	}
	return int(max(d.v.Load(), 0)) - 1
}

// close closes the descriptor, if one was opened; there is none after.
func (d *directFD) close() {
	if v := d.v.Swap(-1); v > 0 {
		unix.Close(int(v) - 1)
	}
}

// writeDirect writes data at off with O_DIRECT, through d for the inode
// open as fd, and reports whether it did. The caller has decided that the
// write goes direct (the mode takes it, directable allows it); on false it
// writes through the page cache, which writes again whatever a failed
// direct write wrote, or reports why it cannot. A filesystem or device
// that refuses O_DIRECT turns it off for the store, with a log line.
func (s *Store) writeDirect(d *directFD, fd int, data []byte, off int64) bool {
	dfd := d.get(s, fd)
	if dfd < 0 {
		return false
	}
	for p, o := data, off; len(p) > 0; {
		n, err := unix.Pwrite(dfd, p, o)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			// EINVAL: this filesystem or device wants other alignment
			// (or none of it). Other errors (a full disk, EIO) are the
			// buffered write's to report: direct IO stays on.
			if errors.Is(err, unix.EINVAL) {
				s.noDirect("write with O_DIRECT", err)
			}
			return false
		}
		p, o = p[n:], o+int64(n)
	}
	s.stats.directWrites.Add(1)
	return true
}

// writeFreshDirect is writeFreshSpans with direct writes: each run of
// non-zero pages of data goes at off into the fresh file f (sized,
// reading as zeros) direct when it is directable (and writeDirect
// succeeds), through the page cache otherwise. Zero pages are not
// written, so a mostly-zero object keeps its unwritten extents, and
// recovery does not write out its zeros.
func (s *Store) writeFreshDirect(f *os.File, d *directFD, data []byte, off int64) error {
	return nonZeroRuns(data, off, func(lo, hi int64) error {
		if s.directable(data[lo:hi], off+lo) && s.writeDirect(d, int(f.Fd()), data[lo:hi], off+lo) {
			return nil
		}
		return writeSpans(f, data[lo:hi], off+lo)
	})
}

// goesDirect reports whether a write of data at off in h goes direct:
// O_DIRECT allows it (directable) and the mode takes it: every write
// (DirectAll), or by default one into chunks never written (neverWritten;
// a handle without checksums cannot tell). It is asked before updateSums
// gives the chunks their new checksums, under h.mu when h has them.
func (s *Store) goesDirect(h *handle, data []byte, off int64) bool {
	if data == nil || !s.directable(data, off) {
		return false
	}
	return s.directAll || (h.sums != nil && h.sums.neverWritten(off, int64(len(data))))
}

// directable reports whether data may be written at off with O_DIRECT:
// direct IO works here, and data is large and aligned enough.
func (s *Store) directable(data []byte, off int64) bool {
	return s.direct.Load() && len(data) >= directMin && off%directAlign == 0 && len(data)%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign == 0
}

// noDirect turns direct writes off for the store after err.
func (s *Store) noDirect(what string, err error) {
	if s.direct.Swap(false) {
		s.log.Warn("direct IO unavailable here: writing through the page cache", "dir", s.objDir, "op", what, "err", err)
	}
}
