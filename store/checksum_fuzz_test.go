package store

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// FuzzSumsValue decodes arbitrary bytes as the checksum xattr of an
// object of arbitrary size, the way loadSums does (decodeSums: the
// geometry the value names, checked against the size), and walks every
// accessor a valid value allows: none may panic, and the chunks tile the
// object.
func FuzzSumsValue(f *testing.F) {
	for _, size := range []int64{1, 10, 3*16<<10 + 10, 4 << 20, proto.InodeSize} {
		f.Add(uint32(size), sumsFor(size, 0, nil, maxChunks).b)
		f.Add(uint32(size), newSums(size, maxChunks).b[:sumHeaderSize])
		f.Add(uint32(size), sumsFor(size, 0, nil, minChunks).b)
	}
	f.Add(uint32(100), []byte{1, 16, 0, 0})
	f.Add(uint32(0), []byte{})
	f.Fuzz(func(t *testing.T, size32 uint32, value []byte) {
		size := 1 + int64(size32)%(16<<20)
		if len(value) > maxSumLen {
			return // ERANGE from fgetxattr: damaged, never decoded
		}
		m, err := decodeSums(size, value)
		if err != nil {
			return
		}
		if m.n > maxChunks || m.shift < minChunkShift {
			t.Fatalf("valid value of %d chunks of 2^%d", m.n, m.shift)
		}
		if m.b[0] != sumVersion && m.b[0] != sumVersionCRC {
			t.Fatalf("valid value of version %d", m.b[0])
		}
		var end int64
		for i := range m.n {
			off, cl := m.chunk(i)
			if off != end || cl <= 0 || cl > 1<<m.shift {
				t.Fatalf("chunk %d is [%d,+%d), previous ended at %d", i, off, cl, end)
			}
			end = off + cl
			_ = m.matches(i, m.cur(i)) && m.matches(i, m.prev(i))
		}
		if end != size {
			t.Fatalf("%d chunks cover %d of %d bytes", m.n, end, size)
		}
		_ = m.unflushed()
		if size <= 1<<20 {
			m.verify(make([]byte, size))
		}
	})
}

// FuzzChecksumXattr stores an arbitrary value as an object's checksum
// xattr, behind the store's back, and reads the object: whatever the
// value, the store never serves bytes other than the object's, fails
// only with a checksum error (which wraps EIO), and Repair from a good
// copy makes the object readable again.
func FuzzChecksumXattr(f *testing.F) {
	const oid, size = 0x7c2b2500000001, 3*16<<10 + 10
	good := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	f.Add(sumsFor(size, 0, good, maxChunks).b)
	f.Add(sumsFor(size, 0, nil, maxChunks).b)
	v1 := bytes.Clone(sumsFor(size, 0, good, maxChunks).b)
	v1[0] = sumVersionCRC
	f.Add(v1)
	unflushed := bytes.Clone(sumsFor(size, 0, good, maxChunks).b)
	unflushed[sumFlags] |= sumUnflushed
	f.Add(unflushed)
	f.Add([]byte{2, 14, 0, 0, 4, 0, 0, 0})
	f.Add([]byte{})

	s, err := Open(Config{Dir: f.TempDir(), NoSync: true})
	if err != nil {
		f.Skip(err)
	}
	defer s.Close()
	if err := s.Create(ctx, oid, size, 0, good, true); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		lock := s.pathLock(oid)
		lock.Lock()
		s.files.invalidate(oid)
		var err error
		if len(value) == 0 {
			err = unix.Removexattr(s.objPath(oid), sumAttr)
		} else {
			err = unix.Setxattr(s.objPath(oid), sumAttr, value, 0)
		}
		lock.Unlock()
		if err != nil && !errors.Is(err, unix.ENODATA) {
			t.Skip(err) // a value the filesystem refuses (too long)
		}
		buf := make([]byte, size)
		switch err := s.ReadAt(ctx, oid, buf, 0); {
		case err == nil:
			if !bytes.Equal(buf, good) {
				t.Fatal("read served bytes that are not the object's")
			}
		case !errors.Is(err, ErrChecksum) || !errors.Is(err, proto.ResEIO):
			t.Fatalf("read failed with %v, want a checksum error", err)
		}
		if _, err := s.Repair(ctx, oid, good); err != nil {
			t.Fatalf("Repair: %v", err)
		}
		if err := s.ReadAt(ctx, oid, buf, 0); err != nil || !bytes.Equal(buf, good) {
			t.Fatalf("after Repair: %v", err)
		}
	})
}
