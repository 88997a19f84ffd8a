package store

import "sync"

// syncGroup coalesces concurrent sync requests on one file (group commit):
// callers that arrive while a sync is running wait for it to end and then
// share the next one, so N concurrent synced writes cost about two
// fdatasyncs instead of N.
//
// The zero value is not ready: call init first.
//
// Invariants, all guarded by mu:
//   - at most one sync runs at a time (running);
//   - syncs are numbered 1, 2, ... in the order they begin; started is the
//     number of the last one begun, done of the last one finished, and
//     done == started unless running, when done == started-1;
//   - a sync numbered g begins after every caller that read started < g
//     under mu has finished its write, so sync g covers those writes.
type syncGroup struct {
	mu      sync.Mutex
	cond    sync.Cond // L is &mu; broadcast whenever a sync finishes
	running bool
	started uint64
	done    uint64
	errGen  uint64 // number of the last sync that failed, 0 if none has
	err     error  // that sync's error
}

func (g *syncGroup) init() { g.cond.L = &g.mu }

// do returns once a call of sync that began after do was called has
// finished, running sync itself if no other caller is about to. The caller
// must have finished the writes it wants covered before calling do.
//
// The error is that of the first covering sync, or of a later one that the
// caller saw finish too. Reporting a later failure is conservative (the data
// may in fact be stable) but never claims durability that was lost.
func (g *syncGroup) do(sync func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1 // the first sync to begin after this call
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := sync()
		g.mu.Lock()
		g.running = false
		g.done = gen
		if err != nil {
			g.errGen, g.err = gen, err
		}
		g.cond.Broadcast()
	}
	if g.errGen >= want {
		return g.err
	}
	return nil
}
