package fanout

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunsEveryCall(t *testing.T) {
	for _, c := range []struct{ n, width int }{{0, 4}, {1, 4}, {7, 0}, {7, 3}, {100, 16}, {5, 50}} {
		var mu sync.Mutex
		seen := map[int]int{}
		err := Run(c.n, c.width, func(i int) error {
			mu.Lock()
			seen[i]++
			mu.Unlock()
			return nil
		})
		if err != nil || len(seen) != c.n {
			t.Fatalf("Run(%d, %d): %v, %d distinct calls", c.n, c.width, err, len(seen))
		}
		for i, k := range seen {
			if k != 1 || i < 0 || i >= c.n {
				t.Fatalf("Run(%d, %d): call %d made %d times", c.n, c.width, i, k)
			}
		}
	}
}

// TestWidth: never more than width calls at once, and width calls do run
// together (the limit is not 1).
func TestWidth(t *testing.T) {
	var cur, peak atomic.Int32
	err := Run(40, 4, func(int) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		cur.Add(-1)
		return nil
	})
	if err != nil || peak.Load() > 4 || peak.Load() < 2 {
		t.Fatalf("err %v, peak concurrency %d (width 4)", err, peak.Load())
	}
}

// TestFirstErrorStops: the failing call's error comes back, and calls not
// yet started when it failed never start.
func TestFirstErrorStops(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int32
	err := Run(1000, 1, func(i int) error {
		calls.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if n := calls.Load(); n > 5 {
		t.Fatalf("%d calls after the 4th failed (width 1)", n)
	}
	if err := Run(1, 0, func(int) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("single call: %v", err)
	}
}
