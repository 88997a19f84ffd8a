// Package netlimit keeps a sheep's listeners alive and its client buffers
// bounded whatever its clients do: an accept loop that backs off instead of
// dying when the process runs out of file descriptors, a cap on the
// connections of one listener, a deadline for a new connection to say
// something, a byte budget for request and reply buffers shared by every
// connection of every front-end, a send buffer that stays in the CPU
// caches for clients on the same host, and rate-limited log lines about
// bad clients.
package netlimit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config bounds one front-end's connections.
type Config struct {
	// MaxConns caps the connections open at once on one listener; a
	// connection accepted over the cap is closed at once (0: no cap).
	MaxConns int
	// IdleTimeout is how long a new connection may take to send its first
	// request (the native protocol) or to finish negotiating (NBD) before
	// it is closed (0: no limit). Established connections have no idle
	// limit: QEMU keeps one open, silent, for as long as a VM runs; dead
	// peers are found by TCP keepalive.
	IdleTimeout time.Duration
	// StallTimeout is how long a reply may wait for the client to read it,
	// or (native protocol) a request's payload may take to arrive, before
	// the connection is given up (0: no limit). A client that stops
	// reading, or trickles a payload, holds budget until then.
	StallTimeout time.Duration
	// Budget bounds the request and reply payloads held for clients; nil
	// is no bound. Share one among all front-ends.
	Budget *Budget
	// PerConn bounds the payload bytes one connection holds (0: none
	// beyond Budget), so that a few stuck connections cannot take the
	// whole budget from the others.
	PerConn int64
	// Log receives listener trouble and (rate-limited) bad-client lines.
	Log *slog.Logger
}

// DefaultConfig returns the limits a sheep runs with unless told
// otherwise: MaxConns a quarter of the open-file limit, IdleTimeout 60 s,
// StallTimeout 60 s, no budget.
func DefaultConfig() Config {
	return Config{MaxConns: DefaultMaxConns(), IdleTimeout: time.Minute, StallTimeout: time.Minute}
}

// DefaultMaxConns is a quarter of the soft RLIMIT_NOFILE (at least 16): a
// sheep has three listeners (TCP, its UNIX socket, NBD) and keeps the rest
// for objects, peers, gossip and raft.
func DefaultMaxConns() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 4096
	}
	return int(max(16, min(rl.Cur/4, 1<<20)))
}

// Gate admits the connections of one listener.
type Gate struct {
	cfg  Config
	name string
	open atomic.Int64
	log  *Sampler
}

// NewGate returns a gate for a listener called name in log lines.
func NewGate(name string, cfg Config) *Gate {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Log = log
	return &Gate{cfg: cfg, name: name, log: NewSampler(log, 10*time.Second)}
}

// Accept returns the next connection of l that fits under the cap; call
// Done when it has ended. Running out of file descriptors, buffers or
// memory is waited out with back off (logged once per episode, never
// returned): a listener stays open for the sheep's whole life. Accept
// returns an error only when l is closed (or fails permanently).
func (g *Gate) Accept(l net.Listener) (net.Conn, error) {
	var delay time.Duration
	var failed int
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if !retryable(err) {
				return nil, err
			}
			if failed == 0 {
				g.cfg.Log.Warn("accept failing; retrying with back off", "listener", g.name, "addr", l.Addr().String(), "err", err)
			}
			failed++
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		if failed > 0 {
			g.cfg.Log.Info("accepting again", "listener", g.name, "failed_accepts", failed)
			failed, delay = 0, 0
		}
		if g.cfg.MaxConns > 0 && g.open.Load() >= int64(g.cfg.MaxConns) {
			g.log.Warn("connection cap reached; closing new connection", "listener", g.name, "peer", c.RemoteAddr().String(), "max", g.cfg.MaxConns)
			c.Close()
			continue
		}
		g.open.Add(1)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
			keepSendBufferSmall(tc)
		}
		if g.cfg.IdleTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(g.cfg.IdleTimeout))
		}
		return c, nil
	}
}

// Done records that a connection Accept returned has ended.
func (g *Gate) Done() { g.open.Add(-1) }

// Open is the number of connections accepted and not yet Done.
func (g *Gate) Open() int { return int(g.open.Load()) }

// Spoke is called once a connection has sent its first request or
// finished negotiating: it lifts the IdleTimeout deadline Accept set.
func (g *Gate) Spoke(c net.Conn) {
	if g.cfg.IdleTimeout > 0 {
		c.SetReadDeadline(time.Time{})
	}
}

// Stalled sets the deadline of the reply about to be written to c.
func (g *Gate) Stalled(c net.Conn) {
	if g.cfg.StallTimeout > 0 {
		c.SetWriteDeadline(time.Now().Add(g.cfg.StallTimeout))
	}
}

// Config returns the gate's configuration.
func (g *Gate) Config() Config { return g.cfg }

// Log returns the gate's rate-limited logger for bad-client lines.
func (g *Gate) Log() *Sampler { return g.log }

// retryable reports errors of accept(2) that pass: resource exhaustion and
// connections that died in the backlog.
func retryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EPROTO, unix.EPERM, unix.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Sampler is a logger for lines a client can trigger at will: the first
// line of each kind (message) in an interval is written, the others are
// counted and reported with the next one written.
type Sampler struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*sampled
}

type sampled struct {
	next       time.Time
	suppressed int
}

// NewSampler returns a sampler writing to log at most one line per message
// per interval every.
func NewSampler(log *slog.Logger, every time.Duration) *Sampler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sampler{log: log, every: every, kinds: map[string]*sampled{}}
}

// Warn logs msg at WARN unless a line with msg was written less than the
// interval ago.
func (s *Sampler) Warn(msg string, args ...any) { s.emit(slog.LevelWarn, msg, args) }

// Info logs msg at INFO, sampled as Warn.
func (s *Sampler) Info(msg string, args ...any) { s.emit(slog.LevelInfo, msg, args) }

func (s *Sampler) emit(level slog.Level, msg string, args []any) {
	now := time.Now()
	s.mu.Lock()
	k := s.kinds[msg]
	if k == nil {
		if len(s.kinds) > 1000 { // messages are constants; this is a guard
			clear(s.kinds)
		}
		k = &sampled{}
		s.kinds[msg] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		s.mu.Unlock()
		return
	}
	n := k.suppressed
	k.suppressed, k.next = 0, now.Add(s.every)
	s.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Log(context.Background(), level, msg, args...)
}
