// Package fanout runs independent calls concurrently and reports the
// first failure: the one shape of "do these n things in parallel" shared
// by the volume layer (one call per object a request touches) and the
// clients that walk many objects or VDIs (collie, sheepfs).
package fanout

import (
	"sync"
	"sync/atomic"
)

// Run calls f(0), ..., f(n-1) with at most width calls running at once
// (width <= 0: all at once) and returns the error of the first call that
// failed, or nil. After a failure no further call starts; Run returns
// once every started call has returned. A single call runs on the
// caller's goroutine.
func Run(n, width int, f func(i int) error) error {
	switch {
	case n <= 0:
		return nil
	case n == 1:
		return f(0)
	case width <= 0 || width > n:
		width = n
	}
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
		once   sync.Once
		first  error
		sem    = make(chan struct{}, width)
	)
	for i := 0; i < n && !failed.Load(); i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if failed.Load() {
				return
			}
			if err := f(i); err != nil {
				once.Do(func() { first = err })
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return first
}
