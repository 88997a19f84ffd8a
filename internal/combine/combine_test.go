package combine

import (
	"sync"
	"testing"
)

// TestEveryItemOnceInOrder: 8 goroutines push 2000 items each while the
// writer is slowed; every item is written exactly once, each pusher's
// items in the order pushed, never two writers at once, and under that
// load some batches carry several items.
func TestEveryItemOnceInOrder(t *testing.T) {
	type item struct{ from, seq int }
	var q Queue[item]
	const pushers, per = 8, 2000
	var (
		mu      sync.Mutex // guards what write records (write runs unlocked)
		writers int
		last    [pushers]int
		seen    int
		maxLen  int
	)
	for i := range last {
		last[i] = -1
	}
	write := func(batch []item) {
		mu.Lock()
		writers++
		if writers > 1 {
			t.Error("two writers at once")
		}
		maxLen = max(maxLen, len(batch))
		for _, it := range batch {
			if it.seq != last[it.from]+1 {
				t.Errorf("pusher %d: item %d after %d", it.from, it.seq, last[it.from])
			}
			last[it.from] = it.seq
			seen++
		}
		mu.Unlock()
		for range 200 { // a writev's worth of time, unlocked
		}
		mu.Lock()
		writers--
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range per {
				q.Push(item{p, s}, s%2 == 0, write)
			}
		}()
	}
	wg.Wait()
	if seen != pushers*per {
		t.Fatalf("%d items written, want %d", seen, pushers*per)
	}
	if maxLen < 2 {
		t.Errorf("no batch carried more than one item under load (largest %d)", maxLen)
	}
}

// TestIdleWritesAtOnce: with nobody else pushing, Push returns only after
// its own item was written.
func TestIdleWritesAtOnce(t *testing.T) {
	var q Queue[int]
	for i := range 100 {
		got := -1
		q.Push(i, true, func(b []int) { got = b[len(b)-1] })
		if got != i {
			t.Fatalf("push %d: written %d before Push returned", i, got)
		}
	}
}

// PushAll queues its items adjacent and in order; idle, they are written
// in one batch before PushAll returns.
func TestPushAllOneBatch(t *testing.T) {
	var q Queue[int]
	var batches [][]int
	write := func(b []int) { batches = append(batches, append([]int(nil), b...)) }
	q.PushAll([]int{1, 2, 3}, false, write)
	q.Push(4, false, write)
	if len(batches) != 2 || len(batches[0]) != 3 || batches[0][0] != 1 || batches[0][2] != 3 || batches[1][0] != 4 {
		t.Fatalf("batches %v, want [[1 2 3] [4]]", batches)
	}
}
