package md

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

const objSize = 64 << 10

func payload(oid uint64) []byte {
	b := make([]byte, objSize)
	for i := range b {
		b[i] = byte(oid>>3) ^ byte(i*7) ^ byte(oid)
	}
	b[0] = 0 // leading and trailing zeros: moves keep them holes
	b[len(b)-1] = 0
	return b
}

func openMD(t *testing.T, meta string, disks ...string) *Store {
	t.Helper()
	s, err := Open(Config{MetaDir: meta, Disks: disks, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeAll(t *testing.T, s *Store, n int) []uint64 {
	t.Helper()
	ctx := context.Background()
	ids := oids(n)
	for _, oid := range ids {
		if err := s.Create(ctx, oid, objSize, 0, payload(oid), false); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func checkAll(t *testing.T, s *Store, ids []uint64) {
	t.Helper()
	buf := make([]byte, objSize)
	for _, oid := range ids {
		if err := s.ReadAt(context.Background(), oid, buf, 0); err != nil {
			t.Fatalf("read %x: %v", oid, err)
		}
		if !bytes.Equal(buf, payload(oid)) {
			t.Fatalf("read %x: wrong bytes", oid)
		}
	}
}

// countOn counts object files directly in dir.
func countOn(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, ok := proto.ParseObjectName(e.Name()); ok {
			n++
		}
	}
	return n
}

// waitSettled waits for the migrator to finish.
func waitSettled(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		l := s.lay.Load()
		if l.settled && len(l.draining) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("objects not settled on their disks after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A node started with one directory keeps the single-disk layout: the
// objects a plain store wrote in DIR/obj are found, and new ones go
// there.
func TestSingleDirIsTheSingleDiskStore(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.Config{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(context.Background(), 42, objSize, 0, payload(42), true); err != nil {
		t.Fatal(err)
	}
	want, err := st.NodeSpace()
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	s := openMD(t, dir)
	checkAll(t, s, []uint64{42})
	if got, err := s.NodeSpace(); err != nil || got != want {
		t.Errorf("NodeSpace = %d, %v; the store's was %d", got, err, want)
	}
	ids := writeAll(t, s, 20)
	if got := countOn(t, filepath.Join(dir, "obj")); got != 21 {
		t.Errorf("%d objects in DIR/obj, want 21", got)
	}
	info := s.Info()
	if len(info) != 1 || info[0].Path != filepath.Join(dir, "obj") || info[0].Index != 0 {
		t.Errorf("Info = %+v, want the one disk DIR/obj", info)
	}
	checkAll(t, s, ids)
}

// Objects spread over all disks, each on the disk the ring names, and
// none in the metadata dir.
func TestSpreadOverDisks(t *testing.T) {
	root := t.TempDir()
	meta, disks := filepath.Join(root, "meta"), []string{filepath.Join(root, "d0"), filepath.Join(root, "d1"), filepath.Join(root, "d2")}
	s := openMD(t, meta, disks...)
	ids := writeAll(t, s, 300)
	l := s.lay.Load()
	total := 0
	for _, d := range disks {
		n := countOn(t, d)
		if n == 0 {
			t.Errorf("no object on %s", d)
		}
		total += n
	}
	if total != len(ids) {
		t.Errorf("%d object files on the disks, want %d", total, len(ids))
	}
	if n := countOn(t, filepath.Join(meta, "obj")); n != 0 {
		t.Errorf("%d objects in the metadata dir", n)
	}
	for _, oid := range ids {
		if _, err := os.Stat(filepath.Join(l.home(oid).path, proto.ObjectName(oid))); err != nil {
			t.Fatalf("oid %x not on its ring disk: %v", oid, err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != len(ids) {
		t.Fatalf("List: %d objects, %v; want %d", len(list), err, len(ids))
	}
	if got := s.Info(); len(got) != 3 || got[0].Path != disks[0] || got[2].Index != 2 || got[1].Used == 0 || got[1].Free == 0 {
		t.Errorf("Info = %+v", got)
	}
	checkAll(t, s, ids)
}

// Unplug moves the disk's objects to the others; plug purges what the
// plugged path held and moves back what the ring puts there. Nothing is
// lost on the way, and recovery is kicked after each.
func TestUnplugAndPlugMoveObjects(t *testing.T) {
	root := t.TempDir()
	disks := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1"), filepath.Join(root, "d2")}
	s := openMD(t, filepath.Join(root, "meta"), disks...)
	var kicks atomic.Int32
	s.SetOnChange(func() { kicks.Add(1) })
	ids := writeAll(t, s, 200)
	var stale uint64 // an object of disks[1], set aside as from epoch 3
	for _, oid := range ids {
		if s.lay.Load().home(oid).path == disks[1] {
			stale = oid
		}
	}
	if err := s.MoveToStale(stale, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), stale, objSize, 0, payload(stale), true); err != nil {
		t.Fatal(err)
	}
	on1 := countOn(t, disks[1])

	if err := s.Unplug([]string{disks[1]}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, s)
	if n := countOn(t, disks[1]); n != 0 {
		t.Errorf("%d objects left on the unplugged disk", n)
	}
	if len(s.Info()) != 2 {
		t.Errorf("Info after unplug: %+v", s.Info())
	}
	checkAll(t, s, ids)
	if kicks.Load() == 0 {
		t.Error("unplug did not kick recovery")
	}
	if b, err := s.ReadStale(stale, 3); err != nil || !bytes.Equal(b, payload(stale)) {
		t.Errorf("the unplugged disk's stale copy: %v", err)
	}
	if l, err := s.ListStale(); err != nil || len(l) != 1 || l[0] != (store.StaleObject{Oid: stale, Epoch: 3}) {
		t.Errorf("stale copies after unplug: %v, %v", l, err)
	}

	// A leftover on the path, as if from before: plug purges it.
	os.WriteFile(filepath.Join(disks[1], proto.ObjectName(ids[0])), []byte("old"), 0o644)
	if err := s.Plug([]string{disks[1]}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, s)
	if n := countOn(t, disks[1]); n != on1 {
		t.Errorf("%d objects on the plugged disk, want %d as before the unplug", n, on1)
	}
	checkAll(t, s, ids)

	// No change: UNKNOWN, as Sheepdog answers.
	for _, err := range []error{s.Plug([]string{disks[1]}), s.Unplug([]string{filepath.Join(root, "nope")}), s.Unplug(disks)} {
		if !errors.Is(err, proto.ResUnknown) {
			t.Errorf("got %v, want UNKNOWN", err)
		}
	}
	if err := s.Plug([]string{filepath.Join(root, "meta")}); !errors.Is(err, proto.ResUnknown) {
		t.Errorf("plugging the metadata dir: %v", err)
	}
}

// A disk serves one sheep, and is given once.
func TestDiskLockedAndGivenOnce(t *testing.T) {
	root := t.TempDir()
	d := filepath.Join(root, "d0")
	openMD(t, filepath.Join(root, "meta"), d, filepath.Join(root, "d1"))
	if _, err := Open(Config{MetaDir: filepath.Join(root, "meta2"), Disks: []string{d}, NoSync: true}); err == nil || !strings.Contains(err.Error(), "in use by another sheep") {
		t.Errorf("a second store on the same disk: %v", err)
	}
	if _, err := Open(Config{MetaDir: filepath.Join(root, "meta3"), Disks: []string{filepath.Join(root, "x"), filepath.Join(root, "x") + "/"}, NoSync: true}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("a disk given twice: %v", err)
	}
	// The failed Open let go of the disk it had opened.
	s := openMD(t, filepath.Join(root, "meta4"), filepath.Join(root, "x"))
	s.Close()
}

// A start with another disk list finds every object at once, and moves
// the misplaced ones to their disks.
func TestRestartWithMoreDisks(t *testing.T) {
	root := t.TempDir()
	meta := filepath.Join(root, "meta")
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1"), filepath.Join(root, "d2")}
	s := openMD(t, meta, d[0])
	ids := writeAll(t, s, 150)
	s.Close()

	s = openMD(t, meta, d...)
	checkAll(t, s, ids) // before, during or after the moves
	waitSettled(t, s)
	for _, dir := range d {
		if countOn(t, dir) == 0 {
			t.Errorf("nothing moved to %s", dir)
		}
	}
	l := s.lay.Load()
	for _, oid := range ids {
		if _, err := os.Stat(filepath.Join(l.home(oid).path, proto.ObjectName(oid))); err != nil {
			t.Fatalf("oid %x not on its ring disk: %v", oid, err)
		}
	}
	checkAll(t, s, ids)
}

// A crash between a move's copy and its remove leaves two copies: the
// ring disk's is served, and the other goes.
func TestDuplicateAfterCrashKeepsRingCopy(t *testing.T) {
	root := t.TempDir()
	meta := filepath.Join(root, "meta")
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1")}
	s := openMD(t, meta, d...)
	ids := writeAll(t, s, 40)
	l := s.lay.Load()
	oid := ids[0]
	home := l.home(oid)
	other := l.disks[0]
	if other == home {
		other = l.disks[1]
	}
	s.Close()
	old := bytes.Repeat([]byte{9}, objSize)
	ost, err := store.Open(store.Config{Dir: other.path, ObjDir: other.path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ost.Create(context.Background(), oid, objSize, 0, old, true)
	ost.Close()

	s, err = Open(Config{MetaDir: meta, Disks: []string{d[1], d[0]}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Not settled at start: look everywhere, the ring disk first.
	checkAll(t, s, ids)
	waitSettled(t, s)
	if _, err := os.Stat(filepath.Join(other.path, proto.ObjectName(oid))); !os.IsNotExist(err) {
		t.Errorf("the duplicate off the ring disk is still there: %v", err)
	}
	checkAll(t, s, ids)
}

// A disk that fails I/O leaves the ring at once: its objects are missing
// (NO_OBJ, which the gateway fills from other copies), new objects go to
// the others, recovery is kicked; the last disk never leaves.
func TestFailedDiskIsUnplugged(t *testing.T) {
	root := t.TempDir()
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1")}
	s := openMD(t, filepath.Join(root, "meta"), d...)
	var kicks atomic.Int32
	s.SetOnChange(func() { kicks.Add(1) })
	var last atomic.Int32
	s.SetOnLastFailed(func(error) { last.Add(1) })
	ids := writeAll(t, s, 100)
	l := s.lay.Load()
	bad := l.disks[0]
	var lostOid, keptOid uint64
	for _, oid := range ids {
		if l.home(oid) == bad {
			lostOid = oid
		} else {
			keptOid = oid
		}
	}
	eio := fmt.Errorf("store: read: %w: %w", proto.ResEIO, &os.PathError{Op: "read", Path: bad.path, Err: unix.EIO})
	if !isDiskFault(eio) || isDiskFault(fmt.Errorf("x: %w: %w", store.ErrChecksum, proto.ResEIO)) {
		t.Fatal("isDiskFault misclassifies")
	}
	if !s.fail(bad, eio) {
		t.Fatal("fail of one of two disks: no retry")
	}
	if got := s.Info(); len(got) != 1 || got[0].Path == bad.path || s.Failures() != 1 {
		t.Fatalf("Info after the failure: %+v, %d failures", got, s.Failures())
	}
	buf := make([]byte, objSize)
	if err := s.ReadAt(context.Background(), lostOid, buf, 0); !errors.Is(err, proto.ResNoObj) {
		t.Errorf("read of an object of the failed disk: %v, want NO_OBJ", err)
	}
	checkAll(t, s, []uint64{keptOid})
	if err := s.Create(context.Background(), lostOid, objSize, 0, payload(lostOid), true); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, []uint64{lostOid})
	for deadline := time.Now().Add(5 * time.Second); kicks.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if kicks.Load() == 0 {
		t.Error("no recovery kicked")
	}
	good := s.lay.Load().disks[0]
	if s.fail(good, eio) {
		t.Error("the last disk was taken out")
	}
	for deadline := time.Now().Add(5 * time.Second); last.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if last.Load() != 1 || len(s.Info()) != 1 {
		t.Errorf("last disk failure: callback ran %d times, %d disks", last.Load(), len(s.Info()))
	}
}

// Writers and readers keep going while a disk is unplugged and plugged
// back, over and over: every read sees the last write, none is lost.
func TestMovesUnderLoad(t *testing.T) {
	root := t.TempDir()
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1"), filepath.Join(root, "d2")}
	s := openMD(t, filepath.Join(root, "meta"), d...)
	ids := writeAll(t, s, 60)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 8)
			for i := uint64(1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				oid := ids[(int(i)*4+w)%len(ids)]
				var v [8]byte
				for k := range v {
					v[k] = byte(i >> (8 * k))
				}
				off := int64(w * 8)
				if err := s.WriteAt(ctx, oid, v[:], off, false); err != nil {
					errs <- fmt.Errorf("write %x: %w", oid, err)
					return
				}
				if err := s.ReadAt(ctx, oid, buf, off); err != nil || !bytes.Equal(buf, v[:]) {
					errs <- fmt.Errorf("read %x back: %v (%x, want %x)", oid, err, buf, v)
					return
				}
			}
		}()
	}
	for round := range 4 {
		p := d[round%3]
		if err := s.Unplug([]string{p}); err != nil {
			t.Fatal(err)
		}
		waitSettled(t, s)
		if err := s.Plug([]string{p}); err != nil {
			t.Fatal(err)
		}
		waitSettled(t, s)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := countOn(t, d[0]) + countOn(t, d[1]) + countOn(t, d[2]); n != len(ids) {
		t.Errorf("%d object files, want %d", n, len(ids))
	}
}

// A call through the md layer allocates nothing of its own.
func TestNoAllocationPerCall(t *testing.T) {
	root := t.TempDir()
	s := openMD(t, filepath.Join(root, "meta"), filepath.Join(root, "d0"), filepath.Join(root, "d1"))
	ids := writeAll(t, s, 4)
	ctx := context.Background()
	buf := make([]byte, 4096)
	st := s.lay.Load().home(ids[0]).st
	base := testing.AllocsPerRun(200, func() { st.ReadAt(ctx, ids[0], buf, 0) })
	got := testing.AllocsPerRun(200, func() { s.ReadAt(ctx, ids[0], buf, 0) })
	if got > base {
		t.Errorf("md ReadAt: %.1f allocations, the disk's store %.1f", got, base)
	}
}

func TestSplitPaths(t *testing.T) {
	for in, want := range map[string][]string{
		"/a\x00":           {"/a"},
		"/a,/b,/c\x00junk": {"/a", "/b", "/c"},
		" /a , ,/b":        {"/a", "/b"},
		"\x00":             nil,
		"":                 nil,
	} {
		if got := SplitPaths([]byte(in)); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("SplitPaths(%q) = %q, want %q", in, got, want)
		}
	}
}

// The probe takes out a disk whose directory is gone, and leaves a
// healthy one alone.
func TestCheckDisks(t *testing.T) {
	root := t.TempDir()
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1")}
	s := openMD(t, filepath.Join(root, "meta"), d...)
	s.CheckDisks()
	if len(s.Info()) != 2 {
		t.Fatalf("a healthy disk was taken out: %+v", s.Info())
	}
	if err := os.RemoveAll(d[1]); err != nil {
		t.Fatal(err)
	}
	s.CheckDisks()
	if got := s.Info(); len(got) != 1 || got[0].Path != d[0] {
		t.Errorf("after the disk's directory went: %+v", got)
	}
}

// A disk that failed (or was unplugged) while the node ran may hold
// outdated objects: the next start that lists it purges it first, once;
// a disk that cannot be used at start is left out, as in Sheepdog.
func TestRestartAfterFailureAndBrokenDisk(t *testing.T) {
	root := t.TempDir()
	meta := filepath.Join(root, "meta")
	d := []string{filepath.Join(root, "d0"), filepath.Join(root, "d1")}
	s := openMD(t, meta, d...)
	ids := writeAll(t, s, 60)
	bad := s.lay.Load().disks[1]
	s.fail(bad, unix.EIO)
	s.Close()
	if countOn(t, bad.path) == 0 {
		t.Fatal("nothing was on the failed disk")
	}

	s = openMD(t, meta, d...)
	if n := countOn(t, bad.path); n != 0 {
		t.Errorf("%d outdated objects kept on the disk that had failed", n)
	}
	var mine uint64
	for _, oid := range ids {
		if s.lay.Load().home(oid).path == bad.path {
			mine = oid
		}
	}
	if s.Exists(mine) {
		t.Errorf("object %x of the failed disk is served", mine)
	}
	if err := s.Create(context.Background(), mine, objSize, 0, payload(mine), true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openMD(t, meta, d...) // purged once only
	checkAll(t, s, []uint64{mine})
	s.Close()

	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o644)
	s = openMD(t, meta, d[0], file)
	if got := s.Info(); len(got) != 1 || got[0].Path != d[0] {
		t.Errorf("with a broken disk: %+v", got)
	}
	s.Close()
	if _, err := Open(Config{MetaDir: meta, Disks: []string{file}, NoSync: true}); err == nil {
		t.Error("a node with no usable disk started")
	}
}
