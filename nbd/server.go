// Package nbd serves every VDI as an NBD export (the protocol of
// https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md), in
// process over core/volume, so NBD clients (qemu-img, qemu-io, nbdcopy,
// nbd-client, fio) read and write the same objects as QEMU's sheepdog
// driver, collie and sheepfs.
//
// Exports are named by the VDI: "NAME" is the working VDI (writable),
// "NAME:SNAPID" and "NAME:TAG" are its snapshots (read-only). Negotiation
// is fixed newstyle with NBD_OPT_GO/INFO, structured replies and the
// base:allocation meta context; the transmission phase runs many requests
// of one connection concurrently and answers them as they complete.
//
// Durability follows the NBD contract: a reply to a write with FUA, and to
// a FLUSH, is sent only after volume.Flush returned, which makes every
// write acknowledged before it stable.
package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/volume"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
)

// Config is what a Server needs. Objects, Lookup and Vids are required.
type Config struct {
	// Objects is the object layer the volumes run over (core/gateway in a
	// sheep).
	Objects volume.ObjectIO
	// Lookup resolves a VDI name, with a tag or snapshot id for a
	// snapshot, to its vid (core/vdi's Service.Lookup). Its errors wrap
	// proto.ResNoVdi / proto.ResNoTag when the VDI does not exist.
	Lookup func(ctx context.Context, name, tag string, snapid uint32) (vid uint32, err error)
	// Vids returns the vids of every live (not deleted) VDI, for
	// NBD_OPT_LIST.
	Vids func() []uint32
	// Log receives connection events and request failures; nil discards.
	Log *slog.Logger
	// MaxInFlight bounds the requests one connection has running at a
	// time (0: 64). The reader stops taking requests off the socket while
	// the bound is reached.
	MaxInFlight int
	// Limits bound the connections of each listener (cap, time to finish
	// negotiating, time a reply may wait for the client) and the READ and
	// WRITE data held for them (Limits.Budget, shared with the other
	// front-ends; Limits.PerConn, at most 256 MiB). The zero value only
	// keeps the per-connection 256 MiB.
	Limits netlimit.Config
	// Metrics records every request (nil: none).
	Metrics *metrics.Frontend
	// TLS, if set, lets clients switch to TLS with NBD_OPT_STARTTLS
	// (qemu's tls-creds, nbd URIs nbds://); TLSRequired refuses every
	// option but STARTTLS and ABORT before it (and needs TLS).
	TLS         *tls.Config
	TLSRequired bool
}

// MetricsOps names the NBD commands for metrics.Registry.Frontend.
var MetricsOps = map[uint8]string{
	uint8(cmdRead): "read", uint8(cmdWrite): "write", uint8(cmdFlush): "flush", uint8(cmdTrim): "trim",
	uint8(cmdCache): "cache", uint8(cmdWriteZeroes): "write_zeroes", uint8(cmdBlockStatus): "block_status",
}

// observe records a request of type typ and length that started at start.
func (s *Server) observe(typ uint16, length uint32, start time.Time, err error) {
	m := s.cfg.Metrics
	if m == nil || typ > 255 {
		return
	}
	var in, out int
	switch typ {
	case cmdWrite:
		in = int(length)
	case cmdRead:
		out = int(length)
	}
	m.Observe(uint8(typ), in, out, time.Since(start), err != nil)
}

// defaultMaxInFlight is the per-connection bound when Config leaves it 0.
const defaultMaxInFlight = 64

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// Server is an NBD server. Its zero value is not usable; call New.
type Server struct {
	cfg  Config
	log  *slog.Logger
	vols registry

	// ctx is the parent of every request's context; cancel aborts them
	// (Close, or Shutdown past its deadline).
	ctx    context.Context
	cancel context.CancelFunc

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		conns     map[*conn]struct{}
	}
	// conns counts the connection goroutines; each finishes only after
	// its requests did, so Wait means no request still runs.
	conns sync.WaitGroup
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = defaultMaxInFlight
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Limits.Log == nil {
		cfg.Limits.Log = log
	}
	s := &Server{cfg: cfg, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.listeners = map[net.Listener]struct{}{}
	s.mu.conns = map[*conn]struct{}{}
	return s
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown or Close, then returns ErrServerClosed. Running out of
// file descriptors is waited out (netlimit.Gate); other accept errors are
// returned as they are.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.mu.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, l)
		s.mu.Unlock()
	}()
	g := netlimit.NewGate("nbd", s.cfg.Limits)
	for {
		nc, err := g.Accept(l)
		if err != nil {
			if s.closed() {
				return ErrServerClosed
			}
			return err
		}
		c := newConn(s, g, nc)
		s.mu.Lock()
		if s.mu.closed {
			s.mu.Unlock()
			nc.Close()
			g.Done()
			return ErrServerClosed
		}
		s.mu.conns[c] = struct{}{}
		s.conns.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.conns.Done()
			defer g.Done()
			c.serve()
			s.mu.Lock()
			delete(s.mu.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// stop marks the server closed, closes the listeners and stops every
// connection from taking new requests or options.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.closed = true
	for l := range s.mu.listeners {
		l.Close()
	}
	for c := range s.mu.conns {
		c.stopReading()
	}
}

// Shutdown stops accepting, lets every connection finish the requests it
// has already read (their replies are sent), then closes the connections.
// If ctx ends first, the remaining requests are cancelled as by Close;
// Shutdown returns only when no request runs any more.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close stops accepting, cancels running requests and closes every
// connection. It returns when no request runs any more.
func (s *Server) Close() error {
	s.stop()
	s.cancel()
	s.mu.Lock()
	for c := range s.mu.conns {
		c.raw.Close()
	}
	s.mu.Unlock()
	s.conns.Wait()
	return nil
}
