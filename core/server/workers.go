package server

import "time"

// workerIdle is how long a request goroutine waits for the next request
// before it exits.
const workerIdle = 2 * time.Second

// runner is a task for the workers (a *task). A pointer in an interface
// costs no allocation.
type runner interface{ run() }

// workers runs the requests of a server on goroutines kept between
// requests. A new goroutine per request paid for its start and, deeper
// in the handler, for growing its stack again by copying: about a tenth
// of a replica's CPU under 4 KiB writes. A kept goroutine has the stack
// the handler grew. Idle ones exit after workerIdle, so a burst leaves
// nothing behind.
type workers struct {
	tasks chan runner // unbuffered: a send succeeds only into an idle worker
	idle  time.Duration
}

func newWorkers(idle time.Duration) *workers {
	return &workers{tasks: make(chan runner), idle: idle}
}

// run runs k on an idle worker, or on a new one when none is idle. It
// never waits.
func (w *workers) run(k runner) {
	select {
	case w.tasks <- k:
	default:
		go w.loop(k)
	}
}

func (w *workers) loop(k runner) {
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		k.run()
		k = nil // not kept alive while idle
		t.Reset(w.idle)
		select {
		case k = <-w.tasks:
		case <-t.C:
			return
		}
	}
}
