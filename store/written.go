package store

// Written pages (checksum.go, updateSums). A write that covers part of a
// chunk holding data must read the chunk back to checksum it as it will
// be: on random 4 KiB first writes into a fresh VDI that read-back was a
// pread of 16 KiB, most of it pages of the object's preallocated and
// never written extents that the kernel zero-fills into the page cache,
// about as much CPU as the write itself. An object this process creates
// with part of its data keeps, for as long as its handle is open, the set
// of its pages that may have been written since (handle.written). The
// rest hold zeros, so a write whose chunk holds nothing else written
// checksums zeros, its data and zeros without reading, as a chunk never
// written does.
//
// Invariant: a page whose bit is clear in h.written reads as zeros. The
// set is made with the file (creation writes only data's pages; the rest
// is a hole or preallocated and unwritten), bits are set under h.mu before
// any data is written to h (change, repairChunks) and never cleared (a
// punch leaves its pages marked, which only costs reads). A handle opened
// on an existing file has no set, nor has one of an object larger than
// writtenMaxPages pages: those read back as before.

// writtenPage is the granularity of the set: the page cache's.
const writtenPage = 4096

// writtenMaxPages bounds the set to 2 KiB (objects up to 64 MiB).
const writtenMaxPages = 1 << 14

// pageSet is a bitmap of pages, bit i for bytes [i*writtenPage,
// (i+1)*writtenPage). A nil set knows nothing.
type pageSet []uint64

// newPageSet returns the set of a fresh object of size bytes written in
// [off, off+n) only, or nil when the object is too large to track or
// data covers it whole (nothing would be left to skip).
func newPageSet(size, off, n int64) pageSet {
	pages := (size + writtenPage - 1) / writtenPage
	if size <= 0 || pages > writtenMaxPages || (off == 0 && n >= size) {
		return nil
	}
	p := make(pageSet, (pages+63)/64)
	p.add(off, n)
	return p
}

// add marks the pages overlapping [off, off+n) as written.
func (p pageSet) add(off, n int64) {
	if p == nil || n <= 0 {
		return
	}
	for i := off / writtenPage; i <= (off+n-1)/writtenPage; i++ {
		p[i>>6] |= 1 << (i & 63)
	}
}

// zero reports whether every page overlapping [off, off+n) is known to
// hold zeros: false for a nil set, true for an empty range.
func (p pageSet) zero(off, n int64) bool {
	if n <= 0 {
		return true
	}
	if p == nil {
		return false
	}
	for i := off / writtenPage; i <= (off+n-1)/writtenPage; i++ {
		if p[i>>6]&(1<<(i&63)) != 0 {
			return false
		}
	}
	return true
}

// readOld reads the chunk of h at cs into buf for updateSums: with a page
// set, only the runs of pages that may hold data, the others being
// zeros. (A pread of those would make the kernel allocate and zero-fill
// page-cache pages for them.) The caller holds h.mu.
func (s *Store) readOld(h *handle, buf []byte, cs int64) error {
	n := int64(len(buf))
	if h.written == nil {
		s.stats.readBacks.Add(uint64((n + writtenPage - 1) / writtenPage))
		_, err := h.f.ReadAt(buf, cs)
		return err
	}
	run := int64(-1) // start of the run of pages to read, if any
	read := func(end int64) error {
		if run < 0 {
			return nil
		}
		s.stats.readBacks.Add(uint64((end - run + writtenPage - 1) / writtenPage))
		_, err := h.f.ReadAt(buf[run:end], cs+run)
		run = -1
		return err
	}
	for p := int64(0); p < n; {
		end := min(n, (cs+p)/writtenPage*writtenPage+writtenPage-cs)
		if h.written.zero(cs+p, end-p) {
			if err := read(p); err != nil {
				return err
			}
			clear(buf[p:end])
		} else if run < 0 {
			run = p
		}
		p = end
	}
	return read(n)
}
