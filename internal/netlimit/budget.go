package netlimit

import (
	"context"
	"sync"
)

// Budget is a count of bytes that request and reply buffers take while
// they are held for a client. Acquire waits for room, so a front-end that
// cannot get room stops reading from its connection instead of buffering
// more.
//
// Invariant: 0 <= used <= size; a waiter is woken whenever bytes are
// released.
type Budget struct {
	size    int64
	mu      sync.Mutex
	used    int64
	waiters int           // Acquire calls waiting for room
	wake    chan struct{} // closed and replaced by a Release while waiters > 0
}

// NewBudget returns a budget of size bytes.
func NewBudget(size int64) *Budget {
	return &Budget{size: size, wake: make(chan struct{})}
}

// Size is the budget's total.
func (b *Budget) Size() int64 { return b.size }

// Used is the number of bytes held right now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Clamp is n as Acquire takes it: a request bigger than the whole budget
// takes the whole budget (it runs alone rather than never).
func (b *Budget) Clamp(n int64) int64 { return min(max(n, 0), b.size) }

// TryAcquire is Acquire for a caller that must not wait: ok is false,
// and nothing is taken, when Clamp(n) bytes are not free right now.
func (b *Budget) TryAcquire(n int64) (taken int64, ok bool) {
	if b == nil {
		return 0, true
	}
	n = b.Clamp(n)
	if n == 0 {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.size {
		return 0, false
	}
	b.used += n
	return n, true
}

// Acquire waits until Clamp(n) bytes are free and takes them, or returns
// ctx's error. It returns the amount taken, to be given to Release. A nil
// budget takes nothing.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	if b == nil {
		return 0, nil
	}
	n = b.Clamp(n)
	if n == 0 {
		return 0, nil
	}
	for {
		b.mu.Lock()
		if b.used+n <= b.size {
			b.used += n
			b.mu.Unlock()
			return n, nil
		}
		wake := b.wake
		b.waiters++
		b.mu.Unlock()
		var err error
		select {
		case <-wake:
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiters--
		b.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
}

// Release gives back n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		panic("netlimit: budget released more than it gave")
	}
	if b.waiters > 0 {
		close(b.wake)
		b.wake = make(chan struct{})
	}
	b.mu.Unlock()
}
