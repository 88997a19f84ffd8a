package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
)

// servePprof serves Go's profiling endpoints (/debug/pprof/: CPU profile,
// trace, heap, goroutine, block and mutex profiles) on addr, which must be
// a loopback address: the endpoints are unauthenticated. It also turns on
// block and mutex profiling, sampled, so that time spent waiting (in
// fsync, on locks, on peers) shows up. Off unless --pprof is given.
func servePprof(addr string, log *slog.Logger) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--pprof %q: only a loopback address is allowed (the endpoints are unauthenticated)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	// One event per 10 µs blocked, one in 10 mutex contentions: cheap
	// enough to leave on while profiling a benchmark.
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(10)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		if err := http.Serve(l, mux); err != nil {
			log.Debug("pprof server stopped", "err", err)
		}
	}()
	log.Info("pprof serving", "addr", l.Addr().String())
	return l, nil
}
