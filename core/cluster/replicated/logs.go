package replicated

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// libLog routes the lines hashicorp/raft (through hclog) and memberlist
// (through the standard log package) write into sheep's slog logger, at
// the level each line carries, at most rate lines per second: a flapping
// peer must not fill sheep.log. Lines dropped are counted and reported
// with the next line let through.
type libLog struct {
	log  *slog.Logger
	name string // "raft" or "memberlist"
	rate int

	mu      sync.Mutex
	window  time.Time
	n       int
	dropped int
}

var _ io.Writer = (*libLog)(nil)

func newLibLog(log *slog.Logger, name string, rate int) *libLog {
	return &libLog{log: log, name: name, rate: rate}
}

// Write takes one or more lines of the libraries' text format, such as
// "2026-01-02T15:04:05.000Z [INFO]  raft: entering leader state: leader=..."
// (hclog) or "2026/01/02 15:04:05 [WARN] memberlist: ..." (memberlist).
func (l *libLog) Write(p []byte) (int, error) {
	for line := range bytes.SplitSeq(bytes.TrimRight(p, "\n"), []byte("\n")) {
		l.line(line)
	}
	return len(p), nil
}

func (l *libLog) line(line []byte) {
	level, msg := slog.LevelInfo, line
	if i := bytes.IndexByte(line, '['); i >= 0 {
		if j := bytes.IndexByte(line[i:], ']'); j > 0 {
			switch string(line[i+1 : i+j]) {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERROR", "ERR":
				level = slog.LevelError
			}
			msg = bytes.TrimSpace(line[i+j+1:])
		}
	}
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	l.n++
	if l.n > l.rate {
		l.dropped++
		l.mu.Unlock()
		return
	}
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	args := []any{"lib", l.name}
	if dropped > 0 {
		args = append(args, "dropped_before", dropped)
	}
	l.log.Log(context.Background(), level, string(msg), args...)
}
