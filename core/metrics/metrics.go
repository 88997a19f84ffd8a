// Package metrics exports a sheep's (or sheepfs's) operating figures in the
// Prometheus exposition format: request counts, bytes and latencies per
// front-end and op, observed on the request path, and gauges and counters
// read from the node's state when scraped.
//
// Names follow Prometheus conventions: the sheepdog_ prefix, base units
// (_seconds, _bytes) and _total for counters.
//
// Invariant: the request path never allocates or takes a lock to record a
// request. A Frontend resolves its label children once per op (cached in a
// fixed array indexed by the op's number), so Observe is a few atomic adds.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric name.
const Namespace = "sheepdog"

// Registry holds one process's metrics.
type Registry struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a registry with the Go runtime and process collectors and
// the per-front-end request metrics.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "requests_total",
		Help: "Requests served, by front-end (native, nbd, sheepfs, peer) and op.",
	}, []string{"frontend", "op"})
	r.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "request_errors_total",
		Help: "Requests that ended in an error, by front-end and op.",
	}, []string{"frontend", "op"})
	r.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "request_bytes_total",
		Help: "Payload bytes moved by requests, by front-end, op and direction (in: written by the client, out: read by it).",
	}, []string{"frontend", "op", "direction"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "request_duration_seconds",
		Help: "Time from a request's arrival to its reply, by front-end and op.",
		// 50 µs .. ~6.5 s: a page-cache hit to a recovery stall.
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
	}, []string{"frontend", "op"})
	r.reg.MustRegister(r.requests, r.errors, r.bytes, r.latency)
	return r
}

// Frontend records the requests of one front-end. ops names the op
// numbers it serves (an op's number indexes the cache, so it must be below
// 256); requests of other ops are recorded under "other".
func (r *Registry) Frontend(name string, ops map[uint8]string) *Frontend {
	f := &Frontend{}
	for i := range f.ops {
		op := "other"
		if n, ok := ops[uint8(i)]; ok {
			op = n
		}
		f.ops[i] = opMetrics{
			requests: r.requests.WithLabelValues(name, op),
			errors:   r.errors.WithLabelValues(name, op),
			in:       r.bytes.WithLabelValues(name, op, "in"),
			out:      r.bytes.WithLabelValues(name, op, "out"),
			latency:  r.latency.WithLabelValues(name, op),
		}
	}
	return f
}

// Frontend is one front-end's request metrics. A nil *Frontend records
// nothing, so front-ends run without metrics at no cost.
type Frontend struct {
	ops [256]opMetrics
}

type opMetrics struct {
	requests, errors, in, out prometheus.Counter
	latency                   prometheus.Observer
}

// Observe records one request of op that took d, moved in bytes from the
// client and out bytes to it, and failed if failed.
func (f *Frontend) Observe(op uint8, in, out int, d time.Duration, failed bool) {
	if f == nil {
		return
	}
	m := &f.ops[op]
	m.requests.Inc()
	if failed {
		m.errors.Inc()
	}
	if in > 0 {
		m.in.Add(float64(in))
	}
	if out > 0 {
		m.out.Add(float64(out))
	}
	m.latency.Observe(d.Seconds())
}

// Gauge registers a gauge read by f at every scrape.
func (r *Registry) Gauge(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, f))
}

// Counter registers a counter read by f at every scrape; f must never go
// down.
func (r *Registry) Counter(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, f))
}

// Collector registers c as is, for metrics with labels.
func (r *Registry) Collector(c prometheus.Collector) { r.reg.MustRegister(c) }

// Gatherer is what promtool-like checks and tests read.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the exposition (text or protobuf, as the scraper asks).
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorLog: nil, EnableOpenMetrics: true})
}

// Server serves /metrics on one address until Close.
type Server struct {
	srv  *http.Server
	addr atomic.Value // string
}

// Serve serves the registry's /metrics on l in the background until
// Close. (The caller opens l, so that a bad address fails the start before
// anything else runs.)
func (r *Registry) Serve(l net.Listener, log *slog.Logger) *Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	s.addr.Store(l.Addr().String())
	go func() {
		if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.addr.Load().(string) }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
