package objcache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

const objSize = 1 << 20

// memBackend is a fake replica layer: objects in memory, every write
// counted, write-back writes stable only after Flush.
type memBackend struct {
	mu      sync.Mutex
	objs    map[uint64][]byte
	stable  map[uint64][]byte
	writes  atomic.Int64
	flushes atomic.Int64
	fail    atomic.Bool
}

func newMem() *memBackend {
	return &memBackend{objs: map[uint64][]byte{}, stable: map[uint64][]byte{}}
}

func (m *memBackend) ReadObject(_ context.Context, oid uint64, off int64, buf []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.objs[oid]
	if o == nil {
		return proto.ResNoObj
	}
	copy(buf, o[off:])
	return nil
}

func (m *memBackend) WriteObject(_ context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if m.fail.Load() {
		return proto.ResEIO
	}
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.objs[oid]
	if o == nil {
		return proto.ResNoObj
	}
	copy(o[off:], data)
	if flags&proto.FlagCmdCache == 0 {
		m.stable[oid] = bytes.Clone(o)
	}
	return nil
}

func (m *memBackend) CreateAndWrite(_ context.Context, oid, cow uint64, off int64, data []byte, flags uint16) error {
	if m.fail.Load() {
		return proto.ResEIO
	}
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.objs[oid]
	if o == nil {
		o = make([]byte, objSize)
		if cow != 0 {
			copy(o, m.objs[cow])
		}
		m.objs[oid] = o
	}
	copy(o[off:], data)
	if flags&proto.FlagCmdCache == 0 {
		m.stable[oid] = bytes.Clone(o)
	}
	return nil
}

func (m *memBackend) RemoveObject(_ context.Context, oid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs[oid] == nil {
		return proto.ResNoObj
	}
	delete(m.objs, oid)
	delete(m.stable, oid)
	return nil
}

func (m *memBackend) Flush(context.Context) error {
	if m.fail.Load() {
		return proto.ResEIO
	}
	m.flushes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	for oid, o := range m.objs {
		m.stable[oid] = bytes.Clone(o)
	}
	return nil
}

func (m *memBackend) get(oid uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.objs[oid])
}

func newCache(t *testing.T, size int64, b *memBackend) *Cache {
	t.Helper()
	return newCacheDirect(t, size, b, false)
}

// newCacheDirect is newCache with the directio option set as given.
func newCacheDirect(t *testing.T, size int64, b *memBackend, direct bool) *Cache {
	t.Helper()
	c, err := Open(Config{
		Dir: filepath.Join(t.TempDir(), "cache"), Size: size, Backend: b, DirectIO: direct,
		Describe: func(_ context.Context, oid uint64) (int64, bool, error) { return objSize, true, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

const wb = proto.FlagCmdWrite | proto.FlagCmdCache

func oidOf(vid, idx uint32) uint64 { return proto.VidToDataOid(vid, idx) }

func TestWriteBackStaysUntilFlush(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	c := newCache(t, 64<<20, b)
	oid := oidOf(7, 0)
	if err := b.CreateAndWrite(ctx, oid, 0, 0, bytes.Repeat([]byte{1}, objSize), 0); err != nil {
		t.Fatal(err)
	}
	before := b.writes.Load()
	data := bytes.Repeat([]byte{2}, 8192)
	if err := c.WriteObject(ctx, oid, 4096, data, wb); err != nil {
		t.Fatal(err)
	}
	if b.writes.Load() != before || !bytes.Equal(b.get(oid)[4096:4096+8192], bytes.Repeat([]byte{1}, 8192)) {
		t.Fatal("a write-back write reached the backend before a flush")
	}
	got := make([]byte, 3*4096)
	if err := c.ReadObject(ctx, oid, 0, got); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{1}, 4096), data...)
	if !bytes.Equal(got, want) {
		t.Fatal("read through the cache misses the cached write or the backend's bytes")
	}
	if in := c.Info(); len(in.Vdis) != 1 || in.Vdis[0].DirtyObjects != 1 || in.Vdis[0].Vid != 7 {
		t.Fatalf("info %+v", in)
	}
	if err := c.FlushVdi(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.get(oid)[:3*4096], want) || b.flushes.Load() != 1 {
		t.Fatal("flush did not push the dirty blocks and sync")
	}
	if in := c.Info(); in.Vdis[0].DirtyObjects != 0 || in.DirtyBytes != 0 {
		t.Fatalf("dirty after flush: %+v", in)
	}
}

func TestCreateAtPush(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	c := newCache(t, 64<<20, b)
	oid := oidOf(7, 3)
	if err := c.CreateAndWrite(ctx, oid, 0, 100, []byte("hello"), wb); err != nil {
		t.Fatal(err)
	}
	if b.get(oid) != nil {
		t.Fatal("created in the backend before a flush")
	}
	got := make([]byte, 8192)
	if err := c.ReadObject(ctx, oid, 0, got); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8192)
	copy(want[100:], "hello")
	if !bytes.Equal(got, want) {
		t.Fatal("created object does not read as zeros and the write")
	}
	if err := c.WriteObject(ctx, oid, 600000, []byte("world"), wb); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	o := b.get(oid)
	if o == nil || string(o[100:105]) != "hello" || string(o[600000:600005]) != "world" {
		t.Fatal("flush did not create the object with both writes")
	}
	// Removing an object that only the cache had is fine.
	oid2 := oidOf(7, 4)
	c.CreateAndWrite(ctx, oid2, 0, 0, []byte("x"), wb)
	if err := c.RemoveObject(ctx, oid2); err != nil {
		t.Fatalf("remove of a cache-only object: %v", err)
	}
}

func TestPlainWriteToMissingObject(t *testing.T) {
	c := newCache(t, 64<<20, newMem())
	err := c.WriteObject(context.Background(), oidOf(7, 9), 0, []byte("x"), wb)
	if !errors.Is(err, proto.ResNoObj) {
		t.Fatalf("write to a missing object: %v, want NO_OBJ", err)
	}
}

func TestWriteThroughKeepsCacheCurrent(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	c := newCache(t, 64<<20, b)
	oid := oidOf(7, 0)
	c.CreateAndWrite(ctx, oid, 0, 0, bytes.Repeat([]byte{1}, 4096), wb)
	if err := c.WriteObject(ctx, oid, 10, []byte("direct"), proto.FlagCmdWrite|proto.FlagCmdDirect); err != nil {
		t.Fatal(err)
	}
	if o := b.get(oid); o == nil || string(o[10:16]) != "direct" {
		t.Fatal("a DIRECT write did not reach the backend")
	}
	got := make([]byte, 16)
	c.ReadObject(ctx, oid, 0, got)
	if string(got[10:]) != "direct" || got[0] != 1 {
		t.Fatalf("cache not current after a DIRECT write: %q", got)
	}
	c.Flush(ctx)
	if o := b.get(oid); string(o[10:16]) != "direct" || o[0] != 1 {
		t.Fatal("flush after a DIRECT write lost one of them")
	}
}

func TestPushFailureKeepsDirty(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	c := newCache(t, 64<<20, b)
	oid := oidOf(7, 0)
	c.CreateAndWrite(ctx, oid, 0, 0, []byte("abc"), wb)
	b.fail.Store(true)
	if err := c.Flush(ctx); err == nil {
		t.Fatal("flush succeeded with a failing backend")
	}
	b.fail.Store(false)
	if c.Info().DirtyBytes == 0 {
		t.Fatal("a failed push forgot the dirty blocks")
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if string(b.get(oid)[:3]) != "abc" {
		t.Fatal("the retried flush did not push")
	}
}

// TestBoundedRandomWrites writes 12 MiB at random into a 2 MiB cache from
// several goroutines: the cache never holds more than its size (charged,
// and on disk), and after a flush the backend holds every write.
func TestBoundedRandomWrites(t *testing.T) {
	t.Run("page cache", func(t *testing.T) { testBoundedRandomWrites(t, false) })
	t.Run("directio", func(t *testing.T) { testBoundedRandomWrites(t, true) })
}

func testBoundedRandomWrites(t *testing.T, direct bool) {
	ctx := context.Background()
	b := newMem()
	const size = 2 << 20
	c := newCacheDirect(t, size, b, direct)
	ops := 250
	if direct {
		ops = 80 // each write is synchronous to the disk
	}
	const nobj = 16
	model := make([][]byte, nobj)
	for i := range model {
		model[i] = make([]byte, objSize)
	}
	var mu sync.Mutex // the model, and one writer per block range
	var wg sync.WaitGroup
	var over atomic.Bool
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, 3*BlockSize)
			for n := 0; n < ops; n++ {
				idx := uint32(r.IntN(nobj))
				// Each writer owns its own quarter of every object, so
				// concurrent writes never overlap.
				off := int64(w)*objSize/4 + int64(r.IntN(objSize/4-len(buf)))
				if n%3 == 0 {
					off = off / 512 * 512
				}
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				if err := c.CreateAndWrite(ctx, oidOf(9, idx), 0, off, buf, wb); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				copy(model[idx][off:], buf)
				mu.Unlock()
				if c.Info().Used > size {
					over.Store(true)
				}
			}
		}(w)
	}
	wg.Wait()
	if over.Load() {
		t.Fatal("the cache held more than its size")
	}
	if du := diskUsage(t, c.cfg.Dir); du > size {
		t.Fatalf("cache dir uses %d bytes on disk, size %d", du, size)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range model {
		got := make([]byte, objSize)
		if err := c.ReadObject(ctx, oidOf(9, uint32(i)), 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model[i]) {
			t.Fatalf("object %d read through the cache differs after the flush at %d", i, firstDiff(got, model[i]))
		}
		if bo := b.get(oidOf(9, uint32(i))); !bytes.Equal(bo, model[i]) {
			t.Fatalf("object %d differs in the backend after the flush at %d", i, firstDiff(bo, model[i]))
		}
	}
}

func diskUsage(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += blocksOf(fi) * 512
		}
		return nil
	})
	return n
}

func TestOpenEmptiesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	os.MkdirAll(filepath.Join(dir, "000007"), 0o755)
	os.WriteFile(filepath.Join(dir, "000007", "0000000700000000"), []byte("stale"), 0o644)
	c, err := Open(Config{Dir: dir, Size: 1 << 20, Backend: newMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("restart kept %d entries of the old cache", len(ents))
	}
}

func TestDirtyRuns(t *testing.T) {
	mk := func(bits ...int) []uint64 {
		m := make([]uint64, 2)
		for _, b := range bits {
			set(m, b)
		}
		return m
	}
	for _, tc := range []struct {
		dirty, valid []int
		created      bool
		want         [][2]int
	}{
		{[]int{1, 2, 5}, []int{1, 2, 5}, false, [][2]int{{1, 3}, {5, 6}}},
		{[]int{1, 2, 5}, []int{1, 2, 3, 4, 5}, false, [][2]int{{1, 6}}},
		{[]int{1, 100}, []int{1, 100}, true, [][2]int{{1, 2}, {100, 101}}},
		{[]int{0, 30}, []int{0, 30}, false, [][2]int{{0, 1}, {30, 31}}},
	} {
		got := dirtyRuns(mk(tc.dirty...), mk(tc.valid...), 128)
		if len(got) != len(tc.want) {
			t.Fatalf("%v: runs %v, want %v", tc.dirty, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%v: runs %v, want %v", tc.dirty, got, tc.want)
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestFlushCoversAckedWrites: while a writer keeps writing (each write a
// new value of one counter block), every Flush that returns has pushed at
// least the value acknowledged before it began.
func TestFlushCoversAckedWrites(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	c := newCache(t, 64<<20, b)
	oid := oidOf(3, 0)
	var acked atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, BlockSize)
		for n := int64(1); ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			for i := range 8 {
				buf[i] = byte(n >> (8 * i))
			}
			if err := c.CreateAndWrite(ctx, oid, 0, 8192, buf, wb); err != nil {
				t.Error(err)
				return
			}
			acked.Store(n)
		}
	}()
	for range 80 {
		want := acked.Load()
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		o := b.get(oid)
		var got int64
		if o != nil {
			for i := range 8 {
				got |= int64(o[8192+i]) << (8 * i)
			}
		}
		if got < want {
			t.Fatalf("flush returned with %d pushed, %d acknowledged before it", got, want)
		}
	}
	close(stop)
	<-done
}
