package server

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runFunc runs a func as a task.
type runFunc func()

func (f runFunc) run() { f() }

func TestWorkersRunEveryTaskAndExitIdle(t *testing.T) {
	before := runtime.NumGoroutine()
	w := newWorkers(50 * time.Millisecond)
	var ran atomic.Int64
	var wg sync.WaitGroup
	block := make(chan struct{})
	// 20 tasks that wait together: run never waits, so each needs a
	// worker of its own.
	for range 20 {
		wg.Add(1)
		w.run(runFunc(func() { defer wg.Done(); <-block; ran.Add(1) }))
	}
	close(block)
	wg.Wait()
	// Then many short ones, reusing the idle workers.
	for range 1000 {
		wg.Add(1)
		w.run(runFunc(func() { defer wg.Done(); ran.Add(1) }))
	}
	wg.Wait()
	if got := ran.Load(); got != 1020 {
		t.Fatalf("ran %d tasks, want 1020", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after the workers went idle, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
