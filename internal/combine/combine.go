// Package combine writes what many goroutines queue for one stream by
// flat combining: whichever goroutine queues an item and finds no writer
// at work becomes the writer, and writes every item queued meanwhile, a
// batch at a time, until none is left. Under load, items share syscalls
// (one writev per batch); idle, an item goes out at once from its own
// goroutine, with no goroutine or channel in between.
package combine

import (
	"runtime"
	"sync"
)

// Queue is the queue of one stream. The zero value is ready to use.
type Queue[T any] struct {
	mu      sync.Mutex
	queue   []T  // items waiting to be written
	spare   []T  // the writer's recycled batch
	writing bool // a writer is at work
}

// Push queues t and, unless a writer is at work, becomes the writer: it
// calls write with each batch queued, in order and with no lock held,
// until the queue is empty. Invariant: one writer at a time, so batches
// are written in the order they were queued, and every item pushed is
// in exactly one batch.
//
// With yield (the caller knows of others under way on the stream), a
// new writer first lets the other runnable goroutines run once, so that
// those about to push join its first batch. write must not keep batch.
func (q *Queue[T]) Push(t T, yield bool, write func(batch []T)) {
	q.mu.Lock()
	q.queue = append(q.queue, t)
	q.drain(yield, write)
}

// PushAll is Push for several items at once, queued in order and
// adjacent (so that, idle, they go out in one batch). ts is not kept.
func (q *Queue[T]) PushAll(ts []T, yield bool, write func(batch []T)) {
	q.mu.Lock()
	q.queue = append(q.queue, ts...)
	q.drain(yield, write)
}

// drain becomes the writer unless one is at work (Push). q.mu is held on
// entry and released on return.
func (q *Queue[T]) drain(yield bool, write func(batch []T)) {
	if q.writing {
		q.mu.Unlock()
		return
	}
	q.writing = true
	if yield {
		q.mu.Unlock()
		runtime.Gosched()
		q.mu.Lock()
	}
	for len(q.queue) > 0 {
		batch := q.queue
		q.queue = q.spare[:0]
		q.mu.Unlock()
		write(batch)
		q.mu.Lock()
		clear(batch)
		q.spare = batch[:0]
	}
	q.writing = false
	q.mu.Unlock()
}
