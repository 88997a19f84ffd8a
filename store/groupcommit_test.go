package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every caller of do returns only after a sync that began after its write
// has finished, and concurrent callers share syncs.
func TestSyncGroupCoversEveryWriteAndCoalesces(t *testing.T) {
	var g syncGroup
	g.init()
	var (
		written atomic.Uint64 // writes finished so far
		durable atomic.Uint64 // writes covered by the last finished sync
		calls   atomic.Int64
		running atomic.Int32
	)
	syncFn := func() error {
		if running.Add(1) != 1 {
			t.Error("two syncs ran at once")
		}
		calls.Add(1)
		covered := written.Load() // everything written before the sync began
		time.Sleep(2 * time.Millisecond)
		durable.Store(covered)
		running.Add(-1)
		return nil
	}
	const callers = 64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				w := written.Add(1) // "write", then ask for durability
				if err := g.do(syncFn); err != nil {
					t.Error(err)
				}
				if d := durable.Load(); d < w {
					t.Errorf("do returned with write %d not covered (durable up to %d)", w, d)
				}
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n >= callers*5/2 {
		t.Fatalf("%d syncs for %d concurrent requests: not coalescing", n, callers*5)
	} else {
		t.Logf("%d syncs for %d requests", n, callers*5)
	}
}

// A failed sync fails every caller it covers; callers covered only by a
// later successful sync succeed.
func TestSyncGroupReportsFailure(t *testing.T) {
	var g syncGroup
	g.init()
	errDisk := errors.New("disk on fire")
	if err := g.do(func() error { return errDisk }); err != errDisk {
		t.Fatalf("failed sync returned %v", err)
	}
	if err := g.do(func() error { return nil }); err != nil {
		t.Fatalf("a later, successful sync reports %v", err)
	}

	// Waiters queued behind a running sync share the next one and its error.
	release := make(chan struct{})
	first := make(chan error)
	go func() { first <- g.do(func() error { <-release; return nil }) }()
	for !isRunning(&g) {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = g.do(func() error { return errDisk }) }()
	}
	time.Sleep(10 * time.Millisecond) // let them queue
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first sync: %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != errDisk {
			t.Errorf("waiter %d: %v, want the failure of the sync that covered it", i, err)
		}
	}
}

func isRunning(g *syncGroup) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}
