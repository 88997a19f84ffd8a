package objcache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/sheepdog-go/sheepdog/internal/bufpool"
)

// cacheFile is what the cache does with an object's file: a plain file
// (through the page cache) or, with the directio option, a directFile.
type cacheFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// openCacheFile creates (or empties) the cache file at path, size bytes
// long.
func openCacheFile(path string, size int64, direct bool) (cacheFile, error) {
	flags := os.O_CREATE | os.O_RDWR | os.O_TRUNC
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		if direct && errors.Is(err, syscall.EINVAL) {
			return nil, fmt.Errorf("directio: the cache dir's filesystem does not support O_DIRECT: %w", err)
		}
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	if direct {
		return &directFile{f: f}, nil
	}
	return f, nil
}

// directFile is a cache file opened with O_DIRECT (Sheepdog's directio
// option): its reads and writes bypass the page cache, so what the cache
// holds does not take memory a second time. O_DIRECT wants the offset,
// the length and the memory of every request aligned to the device's
// logical block size; BlockSize (4 KiB) is a multiple of every such size.
//
// Requests that are not aligned go through an aligned bounce buffer. An
// unaligned write reads its edge blocks, lays the data over them and
// writes whole blocks: it holds mu exclusively, and aligned writes hold
// it shared, so no write lands between such a read and its write-back
// (which would undo it). Reads take no lock: a read that overlaps a write
// in flight may see either bytes, as with any disk.
//
// A write that ends in the file's last, partial block extends the file to
// the block's end; the bytes past the object's size are never read.
type directFile struct {
	f  *os.File
	mu sync.RWMutex
}

func isAligned(b []byte, off int64) bool {
	return off%BlockSize == 0 && len(b)%BlockSize == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%BlockSize == 0
}

// bounce returns an aligned buffer of n bytes (a multiple of BlockSize)
// and the pooled buffer to put back.
func bounce(n int) ([]byte, *[]byte) {
	bp := bufpool.Get(n + BlockSize)
	b := *bp
	skip := 0
	if r := uintptr(unsafe.Pointer(unsafe.SliceData(b))) % BlockSize; r != 0 {
		skip = BlockSize - int(r)
	}
	return b[skip : skip+n], bp
}

// span returns the aligned range [s, t) that covers [off, off+n).
func span(off int64, n int) (s, t int64) {
	s = off &^ (BlockSize - 1)
	t = (off + int64(n) + BlockSize - 1) &^ (BlockSize - 1)
	return s, t
}

// readFull reads [s, s+len(b)) into the aligned b; bytes past the end of
// the file read as zeros.
func (d *directFile) readFull(b []byte, s int64) error {
	n, err := d.f.ReadAt(b, s)
	if err == io.EOF {
		clear(b[n:])
		return nil
	}
	return err
}

// ReadAt implements io.ReaderAt.
func (d *directFile) ReadAt(b []byte, off int64) (int, error) {
	if isAligned(b, off) {
		return d.f.ReadAt(b, off)
	}
	s, t := span(off, len(b))
	buf, bp := bounce(int(t - s))
	defer bufpool.Put(bp)
	if err := d.readFull(buf, s); err != nil {
		return 0, err
	}
	return copy(b, buf[off-s:]), nil
}

// WriteAt implements io.WriterAt.
func (d *directFile) WriteAt(b []byte, off int64) (int, error) {
	if isAligned(b, off) {
		d.mu.RLock()
		defer d.mu.RUnlock()
		return d.f.WriteAt(b, off)
	}
	s, t := span(off, len(b))
	buf, bp := bounce(int(t - s))
	defer bufpool.Put(bp)
	unalignedEdges := off != s || off+int64(len(b)) != t
	if unalignedEdges {
		d.mu.Lock()
		defer d.mu.Unlock()
		// Only the edge blocks keep bytes of their own.
		if err := d.readFull(buf[:BlockSize], s); err != nil {
			return 0, err
		}
		if t-s > BlockSize {
			if err := d.readFull(buf[len(buf)-BlockSize:], t-BlockSize); err != nil {
				return 0, err
			}
		}
	} else {
		d.mu.RLock()
		defer d.mu.RUnlock()
	}
	copy(buf[off-s:], b)
	if _, err := d.f.WriteAt(buf, s); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close implements io.Closer.
func (d *directFile) Close() error { return d.f.Close() }
