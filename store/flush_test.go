package store

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// syncLog records the objects synced through the test hook (marks, the
// syncs of the unflushed flag, apart).
type syncLog struct {
	mu     sync.Mutex
	synced map[uint64]int
	marked map[uint64]int
}

func hookSyncs(s *Store, before func(oid uint64) error) *syncLog {
	l := &syncLog{synced: map[uint64]int{}, marked: map[uint64]int{}}
	s.syncHook = func(oid uint64, mark bool) error {
		if mark {
			l.mu.Lock()
			l.marked[oid]++
			l.mu.Unlock()
			return nil
		}
		if before != nil {
			if err := before(oid); err != nil {
				return err
			}
		}
		l.mu.Lock()
		l.synced[oid]++
		l.mu.Unlock()
		return nil
	}
	return l
}

func (l *syncLog) count(oid uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced[oid]
}

func (l *syncLog) marks(oid uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.marked[oid]
}

// Writes without sync cost no sync; Flush syncs each object written since
// the last flush once, and nothing else.
func TestFlushSyncsOnlyWhatWasWritten(t *testing.T) {
	s := openStore(t, Config{})
	for oid := uint64(1); oid <= 4; oid++ {
		mustCreate(t, s, oid, 1<<20, 0, nil)
	}
	log := hookSyncs(s, nil)
	for i := 0; i < 10; i++ {
		for _, oid := range []uint64{1, 2} {
			if err := s.WriteAt(ctx, oid, []byte("data"), int64(i*4096), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Punch(ctx, 3, 0, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, 5, 1<<20, 0, []byte("new"), false); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Syncs != 0 || st.Dirty != 4 {
		t.Fatalf("after unsynced writes: %d syncs, %d dirty objects; want 0 and 4", st.Syncs, st.Dirty)
	}
	if !s.dirDirty.Load() {
		t.Fatal("an unsynced Create left the directory clean")
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, oid := range []uint64{1, 2, 3, 5} {
		if n := log.count(oid); n != 1 {
			t.Errorf("object %d synced %d times by Flush, want 1", oid, n)
		}
	}
	if n := log.count(4); n != 0 {
		t.Errorf("unwritten object 4 synced %d times", n)
	}
	if s.dirDirty.Load() {
		t.Error("Flush left the directory unsynced")
	}
	st = s.Stats()
	if st.Dirty != 0 || st.Flushes != 1 || st.FlushedObjects != 4 || st.Syncs != 4 {
		t.Errorf("after Flush: %+v; want 0 dirty, 1 flush of 4 objects, 4 syncs", st)
	}
	// Nothing written since: the next flush syncs nothing.
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Syncs != 4 {
		t.Errorf("an idle Flush synced: %+v", st)
	}
	// A synced write leaves nothing for the next flush.
	if err := s.WriteAt(ctx, 4, []byte("x"), 0, true); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Dirty != 0 {
		t.Errorf("a synced write left %d dirty objects", st.Dirty)
	}
}

// A write acknowledged before Flush was called is synced when Flush
// returns, even while an earlier flush pass, which took the dirty set
// before that write, is still running.
func TestFlushCoversWritesAcknowledgedBeforeIt(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	mustCreate(t, s, 2, 1<<20, 0, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	log := hookSyncs(s, func(oid uint64) error {
		if oid == 1 {
			once.Do(func() { close(entered); <-release })
		}
		return nil
	})
	if err := s.WriteAt(ctx, 1, []byte("a"), 0, false); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- s.Flush(ctx) }()
	<-entered // the first pass holds the set {1} and is syncing it

	if err := s.WriteAt(ctx, 2, []byte("b"), 0, false); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- s.Flush(ctx) }()
	select {
	case err := <-second:
		t.Fatalf("Flush returned (%v) before the write it covers was synced", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if log.count(2) != 1 {
		t.Fatalf("object 2, written before the second Flush, synced %d times by it", log.count(2))
	}
}

// A failed sync fails every Flush it covers with EIO, and is not retried
// behind the caller's back: a second fsync after a failed one may report
// a success it cannot vouch for.
func TestFlushReportsFailedSync(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	mustCreate(t, s, 2, 1<<20, 0, nil)
	log := hookSyncs(s, func(oid uint64) error {
		if oid == 2 {
			return unix.EIO
		}
		return nil
	})
	for _, oid := range []uint64{1, 2} {
		if err := s.WriteAt(ctx, oid, []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Flush(ctx)
	wantResult(t, err, proto.ResEIO)
	if !errors.Is(err, unix.EIO) {
		t.Errorf("flush error %v does not carry the cause", err)
	}
	if log.count(1) != 1 {
		t.Error("a failing object kept the others from being synced")
	}
	if st := s.Stats(); st.Dirty != 0 {
		t.Errorf("%d objects left dirty after a failed flush", st.Dirty)
	}
}

// Removed objects and objects moved to .stale leave the dirty set; a
// flush does not trip over them.
func TestFlushAfterRemoveAndStale(t *testing.T) {
	s := openStore(t, Config{})
	for oid := uint64(1); oid <= 3; oid++ {
		mustCreate(t, s, oid, 4096, 0, nil)
		if err := s.WriteAt(ctx, oid, []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveToStale(2, 7); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Dirty != 1 {
		t.Fatalf("%d dirty objects, want 1 (the one left in place)", st.Dirty)
	}
	log := hookSyncs(s, nil)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if log.count(1) != 0 || log.count(2) != 0 || log.count(3) != 1 {
		t.Errorf("synced: %v", log.synced)
	}
}

// A handle evicted from the file cache with unsynced checksum changes
// loses its metaDirty flag: the first sync of the reopened file must be an
// fsync all the same.
func TestReopenedHandleSyncsMetadata(t *testing.T) {
	s := openStore(t, Config{MaxOpenFiles: 1})
	mustCreate(t, s, 1, 4096, 0, nil)
	if err := s.WriteAt(ctx, 1, []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	for oid := uint64(2); oid < 10; oid++ { // evict object 1
		mustCreate(t, s, oid, 4096, 0, nil)
	}
	h, err := s.files.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.files.release(h)
	if !h.metaDirty.Load() {
		t.Fatal("a reopened object would be synced with fdatasync")
	}
}

// With NoSync, flushes sync nothing but still empty the set.
func TestFlushNoSync(t *testing.T) {
	s := openStore(t, Config{NoSync: true})
	mustCreate(t, s, 1, 4096, 0, nil)
	if err := s.WriteAt(ctx, 1, []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Dirty != 0 || st.Syncs != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestFlushAfterClose(t *testing.T) {
	s := openStore(t, Config{})
	s.Close()
	wantResult(t, s.Flush(ctx), proto.ResShutdown)
}

// unflushedOnDisk reads the unflushed flag of object oid from its file.
func unflushedOnDisk(t *testing.T, s *Store, oid uint64) bool {
	t.Helper()
	v, err := xattr.Get(s.objPath(oid), sumAttr)
	if err != nil {
		t.Fatal(err)
	}
	return v[sumFlags]&sumUnflushed != 0
}

// The first write without sync to a clean object flags it unflushed,
// durably (one mark); later ones cost nothing; a flush clears the flag,
// and the next write-back write marks the object again.
func TestUnflushedFlag(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	log := hookSyncs(s, nil)
	if unflushedOnDisk(t, s, 1) {
		t.Fatal("a synced Create is flagged unflushed")
	}
	for i := 0; i < 3; i++ {
		if err := s.WriteAt(ctx, 1, []byte("x"), int64(i)*ck, false); err != nil {
			t.Fatal(err)
		}
	}
	if !unflushedOnDisk(t, s, 1) || log.marks(1) != 1 {
		t.Fatalf("after three writes without sync: flagged %v, %d marks; want flagged, 1 mark", unflushedOnDisk(t, s, 1), log.marks(1))
	}
	if err := s.WriteAt(ctx, 1, []byte("y"), 0, true); err != nil {
		t.Fatal(err)
	}
	if !unflushedOnDisk(t, s, 1) {
		t.Fatal("a synced write cleared the flag; only a flush does")
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if unflushedOnDisk(t, s, 1) {
		t.Fatal("Flush left the flag set")
	}
	if err := s.Punch(ctx, 1, 0, 4096, false); err != nil {
		t.Fatal(err)
	}
	if !unflushedOnDisk(t, s, 1) || log.marks(1) != 2 {
		t.Fatalf("a punch without sync after the flush: flagged %v, %d marks", unflushedOnDisk(t, s, 1), log.marks(1))
	}
	if err := s.Create(ctx, 2, 1<<20, 0, []byte("z"), false); err != nil {
		t.Fatal(err)
	}
	if !unflushedOnDisk(t, s, 2) || log.marks(2) != 0 {
		t.Fatal("a Create without sync must be flagged, with no mark of its own")
	}
}

// A write without sync that lands while a flush is syncing its object
// keeps the flag: the flush did not cover it.
func TestFlushKeepsFlagOfObjectWrittenMeanwhile(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	if err := s.WriteAt(ctx, 1, []byte("a"), 0, false); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hookSyncs(s, func(oid uint64) error {
		once.Do(func() { close(entered); <-release })
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- s.Flush(ctx) }()
	<-entered
	if err := s.WriteAt(ctx, 1, []byte("b"), ck, false); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !unflushedOnDisk(t, s, 1) || s.Stats().Dirty != 1 {
		t.Fatalf("written during the flush: flagged %v, %d dirty; want flagged and dirty", unflushedOnDisk(t, s, 1), s.Stats().Dirty)
	}
}

// After a crash, a chunk written without sync may hold older bytes than
// its checksums describe (the xattr reached the disk, the data did not).
// Reopened, the flagged object is taken as found and reads; the same
// damage to an object without unflushed writes is a bad chunk.
func TestUnflushedChunksAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0x11}, ck)
	for _, oid := range []uint64{1, 2} {
		mustCreate(t, s, oid, 4*ck, 0, old)
	}
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{0x22}, ck), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, 2, bytes.Repeat([]byte{0x22}, ck), 0, true); err != nil {
		t.Fatal(err)
	}
	// The crash: the processes dies, and chunk 0 of both objects is what
	// it was before the last write.
	s.Close()
	for _, oid := range []uint64{1, 2} {
		f, err := os.OpenFile(s.objPath(oid), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(old[:ck/2], 0); err != nil { // a mix of both writes
			t.Fatal(err)
		}
		f.Close()
	}

	s = openStore(t, Config{Dir: dir})
	got := mustRead(t, s, 1, 0, ck)
	if !bytes.Equal(got[:ck/2], old[:ck/2]) || got[ck/2] != 0x22 {
		t.Fatal("the unflushed chunk does not read as found")
	}
	if unflushedOnDisk(t, s, 1) {
		t.Fatal("the flag survived the recovery of the object")
	}
	err = s.ReadAt(ctx, 2, make([]byte, ck), 0)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("damaged chunk of a flushed object: %v, want a checksum error", err)
	}
}

// A write whose mark fails fails, and leaves the flag to be marked again
// by the next write without sync.
func TestFailedMarkIsRetried(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	marks, fail := 0, true
	s.syncHook = func(oid uint64, mark bool) error {
		if mark {
			marks++
			if fail {
				return unix.EIO
			}
		}
		return nil
	}
	wantResult(t, s.WriteAt(ctx, 1, []byte("x"), 0, false), proto.ResEIO)
	fail = false
	if err := s.WriteAt(ctx, 1, []byte("y"), 0, false); err != nil {
		t.Fatal(err)
	}
	if marks != 2 || !unflushedOnDisk(t, s, 1) {
		t.Fatalf("%d marks, flagged %v; want the second write to mark again", marks, unflushedOnDisk(t, s, 1))
	}
	if got := mustRead(t, s, 1, 0, 1); got[0] != 'y' {
		t.Fatalf("read %q", got)
	}
}

// Write-back writes to an object already flagged unflushed keep their
// checksums in memory: the xattr is not rewritten per write. A flush, the
// eviction of the handle, or Close stores them, so that a reopened handle
// verifies what was written; a crash (the process dies with them in
// memory) leaves the flag, and the reopened object reads as found.
func TestWriteBackChecksumsInMemory(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, MaxOpenFiles: 1})
	mustCreate(t, s, 1, 4*ck, 0, nil)
	mustCreate(t, s, 2, 4*ck, 0, nil)
	onDisk := func(oid uint64) []byte {
		t.Helper()
		v, err := xattr.Get(s.objPath(oid), sumAttr)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The first write marks the object; the second changes only memory.
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{1}, ck), 0, false); err != nil {
		t.Fatal(err)
	}
	marked := onDisk(1)
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{2}, ck), ck, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk(1), marked) {
		t.Fatal("a write-back write to a flagged object rewrote the xattr")
	}
	// Evicting the handle (MaxOpenFiles 1) stores them: the reopened
	// object verifies.
	mustRead(t, s, 2, 0, ck)
	mustRead(t, s, 2, 0, ck) // a second insertion evicts once stored
	if bytes.Equal(onDisk(1), marked) {
		t.Fatal("checksums kept in memory were not stored when the handle left the cache")
	}
	if got := mustRead(t, s, 1, ck, ck); !bytes.Equal(got, bytes.Repeat([]byte{2}, ck)) {
		t.Fatal("reopened object reads wrong")
	}
	// Flush stores them too, and clears the flag.
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{3}, ck), 2*ck, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{4}, ck), 3*ck, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if unflushedOnDisk(t, s, 1) {
		t.Fatal("flag left set by Flush")
	}
	// The crash: write-back writes after the mark, then the process dies
	// without storing their checksums (a second Store on the same dir
	// stands for the restarted process).
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{5}, ck), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{6}, ck), ck, false); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, Config{Dir: dir})
	want := slices.Concat(bytes.Repeat([]byte{5}, ck), bytes.Repeat([]byte{6}, ck),
		bytes.Repeat([]byte{3}, ck), bytes.Repeat([]byte{4}, ck))
	if got := mustRead(t, s2, 1, 0, 4*ck); !bytes.Equal(got, want) {
		t.Fatal("after the crash the object does not read as written")
	}
}

// CreateOrWrite of part of a missing object without sync links a fully
// written unnamed file into place, with its checksums in memory only: a
// flush stores them (and clears the flag); a crash before that leaves an
// object without checksums, taken as found when reopened. A second
// CreateOrWrite of the same object writes only its range.
func TestCreateOrWriteNewObject(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	one := bytes.Repeat([]byte{1}, 100)
	if err := s.CreateOrWrite(ctx, 1, 4*ck, ck+10, one, false); err != nil {
		t.Fatal(err)
	}
	if _, err := xattr.Get(s.objPath(1), sumAttr); err == nil {
		t.Error("a write-back create stored its checksums before a flush")
	}
	if err := s.CreateOrWrite(ctx, 1, 4*ck, 0, []byte{2}, false); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4*ck)
	want[0] = 2
	copy(want[ck+10:], one)
	if got := mustRead(t, s, 1, 0, 4*ck); !bytes.Equal(got, want) {
		t.Fatal("object reads wrong")
	}
	// The crash, before any flush: a second store stands for the
	// restarted process.
	s2 := openStore(t, Config{Dir: dir})
	if got := mustRead(t, s2, 1, 0, 4*ck); !bytes.Equal(got, want) {
		t.Fatal("after the crash the object reads wrong")
	}
	// A flush stores the checksums, unflagged.
	if err := s.CreateOrWrite(ctx, 2, 4*ck, 3, one, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if unflushedOnDisk(t, s, 2) {
		t.Error("flag left set by the flush")
	}
	if names, _ := readDirNames(s.objDir); len(names) != 3 { // two objects and .stale
		t.Errorf("obj/ holds %v", names)
	}
}

// A CreateOrWrite that finds the object already there (written and
// flagged unflushed before a crash, not opened since) settles it as any
// open after a crash does: the write lands, and nothing reads as a
// checksum error.
func TestCreateOrWriteOverObjectFlaggedByACrash(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	old := bytes.Repeat([]byte{0x11}, ck)
	mustCreate(t, s, 1, 4*ck, 0, old)
	if err := s.WriteAt(ctx, 1, bytes.Repeat([]byte{0x22}, ck), 0, false); err != nil {
		t.Fatal(err)
	}
	// The crash: chunk 0 is a mix of both writes on disk.
	f, err := os.OpenFile(s.objPath(1), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(old[:ck/2], 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s2 := openStore(t, Config{Dir: dir})
	if err := s2.CreateOrWrite(ctx, 1, 4*ck, 10, []byte{0x33}, false); err != nil {
		t.Fatalf("write over the flagged object: %v", err)
	}
	got := mustRead(t, s2, 1, 0, ck)
	if got[0] != 0x11 || got[10] != 0x33 || got[ck/2] != 0x22 {
		t.Fatal("the object does not read as found plus the write")
	}
}
