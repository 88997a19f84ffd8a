package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Many goroutines write disjoint ranges of one object with sync set while
// others read; afterwards the object, read through a fresh Store, holds
// every write.
func TestConcurrentSyncedWrites(t *testing.T) {
	const (
		oid     = 0x1234
		writers = 32
		perW    = 8
		chunk   = 4096
		size    = writers * perW * chunk
	)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	mustCreate(t, s, oid, size, 0, nil)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.ReadAt(ctx, oid, buf, rand.Int64N(size/chunk)*chunk); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var ww sync.WaitGroup
	for w := 0; w < writers; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for i := 0; i < perW; i++ {
				idx := i*writers + w // interleave the writers' ranges
				if err := s.WriteAt(ctx, oid, bytes.Repeat([]byte{byte(idx)}, chunk), int64(idx)*chunk, true); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	ww.Wait()
	close(stop)
	wg.Wait()

	h, err := s.files.acquire(oid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d synced writes took %d fdatasyncs", writers*perW, h.sync.started)
	s.files.release(h)
	s.Close()

	s2 := openStore(t, Config{Dir: dir})
	got := mustRead(t, s2, oid, 0, size)
	for idx := 0; idx < size/chunk; idx++ {
		if !bytes.Equal(got[idx*chunk:(idx+1)*chunk], bytes.Repeat([]byte{byte(idx)}, chunk)) {
			t.Fatalf("chunk %d lost or torn", idx)
		}
	}
}

// With more objects than the file cache holds, every object still reads
// and writes its own file, idle files are closed, and files in use are not.
func TestFileCacheEviction(t *testing.T) {
	const max, objects, size = 8, 50, 4096
	s := openStore(t, Config{NoSync: true, MaxOpenFiles: max})
	fdsBefore := openFDs(t)
	content := func(oid uint64, gen int) []byte {
		tag := fmt.Sprintf("%04x-%d;", oid, gen)
		return bytes.Repeat([]byte(tag), size/len(tag)+1)[:size]
	}
	for oid := uint64(1); oid <= objects; oid++ {
		mustCreate(t, s, oid, size, 0, content(oid, 0))
	}
	if n := s.files.len(); n > max {
		t.Fatalf("%d files cached after creating %d objects, max %d", n, objects, max)
	}

	// Random concurrent traffic over all objects: each goroutine owns the
	// objects congruent to its number, so the final content is known.
	const workers = 5
	var wg sync.WaitGroup
	gens := make([]int, objects+1)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, size)
			for i := 0; i < 400; i++ {
				oid := uint64(rng.IntN(objects/workers)*workers + w + 1)
				if rng.IntN(3) == 0 {
					gens[oid]++
					if err := s.WriteAt(ctx, oid, content(oid, gens[oid]), 0, false); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if err := s.ReadAt(ctx, oid, buf, 0); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf, content(oid, gens[oid])) {
					t.Errorf("object %d read another object's or an old file's bytes", oid)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.files.len(); n > max {
		t.Fatalf("%d files cached when idle, max %d", n, max)
	}
	if grown := openFDs(t) - fdsBefore; grown > max {
		t.Fatalf("%d more descriptors open than before: evicted files leak", grown)
	}

	// A handle in use survives eviction pressure and is closed by its
	// release.
	h, err := s.files.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	for oid := uint64(2); oid <= objects; oid++ {
		mustRead(t, s, oid, 0, 1)
	}
	if _, err := h.f.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatalf("file in use was closed by eviction: %v", err)
	}
	s.files.release(h)
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// Concurrent Creates, Removes, moves to .stale and I/O on one oid never
// leave the cache pointing at a file the path no longer names.
func TestPathChangesRaceWithIO(t *testing.T) {
	const oid, size = 0x8000000900000000, 512
	s := openStore(t, Config{NoSync: true, MaxOpenFiles: 4})
	var wg sync.WaitGroup
	var epoch atomic.Uint32
	deadline := time.Now().Add(300 * time.Millisecond)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for i := 0; time.Now().Before(deadline); i++ {
				var err error
				switch (w + i) % 5 {
				case 0:
					err = s.Create(ctx, oid, size, 0, bytes.Repeat([]byte{byte(w)}, size), false)
				case 1:
					err = s.Remove(ctx, oid)
				case 2:
					err = s.MoveToStale(oid, epoch.Add(1))
				case 3:
					err = s.WriteAt(ctx, oid, []byte{byte(w)}, 0, false)
				case 4:
					err = s.ReadAt(ctx, oid, buf, 0)
				}
				if err != nil && !errors.Is(err, proto.ResNoObj) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	mustCreate(t, s, oid, size, 0, bytes.Repeat([]byte("z"), size))
	if err := s.WriteAt(ctx, oid, []byte("final"), 0, false); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(s.objPath(oid))
	if err != nil || string(onDisk[:6]) != "finalz" {
		t.Fatalf("write after the race went to a stale file: disk has %q (%v)", onDisk[:6], err)
	}
	if err := s.Remove(ctx, oid); err != nil {
		t.Fatal(err)
	}
	wantResult(t, s.ReadAt(ctx, oid, make([]byte, 1), 0), proto.ResNoObj)
}
