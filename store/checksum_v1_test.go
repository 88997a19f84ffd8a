package store

import (
	"bytes"
	"hash/crc32"
	"testing"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"
)

// A chunk's checksum streamed from pieces (a Create's zeros around its
// data) is that of the assembled chunk, and zeroSum that of n zero bytes,
// at every size a chunk or a piece can have.
func TestPiecesHashAsTheirConcatenation(t *testing.T) {
	for _, n := range []int64{1, 100, 240, 241, 1024, 1088, 1089, 4096, ck - 1, ck, ck + 3, 64 << 10, 1 << 20, 8 << 20} {
		if got, want := zeroSum(n), uint32(xxh3.Hash(make([]byte, n))); got != want {
			t.Errorf("zeroSum(%d) = %#x, want %#x", n, got, want)
		}
	}
	chunk := randBytes(ck)
	want := uint32(xxh3.Hash(chunk))
	for _, cut := range [][2]int{{0, 0}, {0, ck}, {1, 2}, {100, 5000}, {1023, 1089}, {4096, 8192}, {ck - 1, ck}, {0, ck - 64}, {64, ck}} {
		h := getHasher()
		h.Write(chunk[:cut[0]])
		h.Write(chunk[cut[0]:cut[1]])
		h.Write(chunk[cut[1]:])
		if got := sumHasher(h); got != want {
			t.Errorf("pieces cut at %v: %#x, want %#x", cut, got, want)
		}
	}
	// A Create with data inside a large chunk (2 MiB, over len(zeros)).
	const size = 512 << 20
	data := randBytes(3000)
	m := sumsFor(size, 5<<20+7, data, maxChunks)
	big := make([]byte, 1<<m.shift)
	copy(big[1<<20+7:], data)
	if m.shift != 21 || m.cur(2) != uint32(xxh3.Hash(big)) || m.cur(0) != zeroSum(1<<21) {
		t.Fatalf("sumsFor: 2^%d chunks, chunk 2 %#x want %#x", m.shift, m.cur(2), uint32(xxh3.Hash(big)))
	}
}

// v1Value is the version 1 xattr value of an object holding data: CRC-32C
// values, as stores before version 2 wrote them.
func v1Value(data []byte, flags byte) []byte {
	m := newSums(int64(len(data)), maxChunks)
	m.b[0], m.b[sumFlags] = 1, flags
	for i := range m.n {
		cs, cl := m.chunk(i)
		c := crc32.Checksum(data[cs:cs+cl], crc32.MakeTable(crc32.Castagnoli))
		m.set(m.b, i, c, c)
	}
	return m.b
}

// onDiskSums reads the checksums of the file at path, of size bytes.
func onDiskSums(t *testing.T, path string, size int64) *sums {
	t.Helper()
	m := newSums(size, maxChunks)
	n, err := unix.Getxattr(path, sumAttr, m.b)
	if err != nil || m.valid(n) != nil {
		t.Fatalf("xattr: %d bytes, %v, %v", n, err, m.valid(n))
	}
	return m
}

// putV1Object makes oid an object of a store from before version 2: data
// with its CRC-32C values. s is closed.
func putV1Object(t *testing.T, dir string, oid uint64, data []byte, flags byte) string {
	t.Helper()
	s := openStore(t, Config{Dir: dir})
	mustCreate(t, s, oid, int64(len(data)), 0, data)
	s.Close()
	path := s.objPath(oid)
	if err := unix.Setxattr(path, sumAttr, v1Value(data, flags), 0); err != nil {
		t.Fatal(err)
	}
	return path
}

// An object with CRC-32C checksums (version 1) is converted when opened:
// chunks that pass their CRCs get XXH3 checksums of the same bytes, stored
// in a version 2 value; a chunk that fails them stays bad, across reopens,
// until Repair.
func TestVersion1IsConverted(t *testing.T) {
	const oid, size = 0x101, 4*ck + 999
	dir := t.TempDir()
	good := randBytes(size)
	path := putV1Object(t, dir, oid, good, 0)
	bad := int64(1*ck + 77)
	flipByte(t, path, bad)

	s := openStore(t, Config{Dir: dir})
	wantChecksum(t, s.ReadAt(ctx, oid, make([]byte, 10), bad-5))
	wantChecksum(t, s.WriteAt(ctx, oid, []byte("x"), 1*ck, true))
	if got := mustRead(t, s, oid, 2*ck, size-2*ck); !bytes.Equal(got, good[2*ck:]) {
		t.Fatal("a good chunk reads wrong after the conversion")
	}
	m := onDiskSums(t, path, size)
	if m.b[0] != sumVersion {
		t.Fatalf("version %d on disk after the conversion, want %d", m.b[0], sumVersion)
	}
	for i := range m.n {
		cs, cl := m.chunk(i)
		want := uint32(xxh3.Hash(good[cs : cs+cl]))
		if i == 1 {
			b := bytes.Clone(good[cs : cs+cl])
			b[bad-cs] ^= 0x5a
			if c := uint32(xxh3.Hash(b)); m.cur(i) == c || m.prev(i) == c {
				t.Fatal("the conversion blessed the bad chunk")
			}
			continue
		}
		if m.cur(i) != want || m.prev(i) != want {
			t.Fatalf("chunk %d: cur %#x prev %#x, want %#x", i, m.cur(i), m.prev(i), want)
		}
	}
	s.Close()

	s = openStore(t, Config{Dir: dir})
	wantChecksum(t, s.Verify(oid))
	if n, err := s.Repair(ctx, oid, good); err != nil || n != 1 {
		t.Fatalf("Repair = %d, %v; want 1 chunk", n, err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("object differs from the good copy after Repair")
	}
}

// A version 1 chunk that matches its prev CRC (its last write never reached
// the data) converts as good.
func TestVersion1PrevIsAccepted(t *testing.T) {
	const oid, size = 0x102, 2 * ck
	dir := t.TempDir()
	good := randBytes(size)
	path := putV1Object(t, dir, oid, good, 0)
	v := v1Value(good, 0)
	m := newSums(size, maxChunks)
	copy(m.b, v)
	m.set(m.b, 1, m.cur(1)+1, m.prev(1)) // cur: a write that never landed
	if err := unix.Setxattr(path, sumAttr, m.b, 0); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, Config{Dir: dir})
	if err := s.Verify(oid); err != nil {
		t.Fatal(err)
	}
}

// A version 1 object flagged unflushed by a store that crashed is taken as
// found, as a version 2 one is, and the flag is cleared.
func TestVersion1UnflushedIsSettled(t *testing.T) {
	const oid, size = 0x103, 3 * ck
	dir := t.TempDir()
	good := randBytes(size)
	path := putV1Object(t, dir, oid, good, sumUnflushed)
	flipByte(t, path, 2*ck+1)
	s := openStore(t, Config{Dir: dir})
	got := mustRead(t, s, oid, 0, size)
	if !bytes.Equal(got[:2*ck], good[:2*ck]) || got[2*ck+1] != good[2*ck+1]^0x5a {
		t.Fatal("the unflushed v1 object does not read as found")
	}
	if m := onDiskSums(t, path, size); m.b[0] != sumVersion || m.unflushed() {
		t.Fatalf("version %d, unflushed %v after settling; want %d, clear", m.b[0], m.unflushed(), sumVersion)
	}
}

// A stale copy set aside with version 1 checksums is verified with CRC-32C.
func TestVersion1StaleVerifies(t *testing.T) {
	const oid, size = 0x104, 2*ck + 5
	s := openStore(t, Config{})
	good := randBytes(size)
	mustCreate(t, s, oid, size, 0, good)
	if err := s.MoveToStale(oid, 3); err != nil {
		t.Fatal(err)
	}
	path := s.stalePath(oid, 3)
	if err := unix.Setxattr(path, sumAttr, v1Value(good, 0), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadStale(oid, 3); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("ReadStale: %v", err)
	}
	flipByte(t, path, 3)
	_, err := s.ReadStale(oid, 3)
	wantChecksum(t, err)
}
