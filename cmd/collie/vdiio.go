package main

import (
	"errors"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// Streaming parameters of vdi read/write: chunks of ioChunk bytes, aligned
// to ioChunk boundaries of the VDI, with ioWindow chunks in flight.
const (
	ioChunk  = 4 << 20
	ioWindow = 8
)

// offsetArgs decodes vdi read/write's optional [offset [len]].
func offsetArgs(args []string) (offset, length uint64, err error) {
	length = math.MaxUint64
	if len(args) > 1 {
		if offset, err = sizeArg(args[1]); err != nil {
			return 0, 0, err
		}
		if len(args) > 2 {
			if length, err = sizeArg(args[2]); err != nil {
				return 0, 0, err
			}
		}
	}
	return offset, length, nil
}

// openVolume opens vid over the session's connection.
func (s *session) openVolume(vid uint32, readOnly bool, what string) (*volume.Volume, error) {
	objs, err := s.objects()
	if err != nil {
		return nil, err
	}
	vol, err := volume.Open(s.ctx, objs, vid, readOnly)
	if err != nil {
		return nil, ioFailure(what, err)
	}
	return vol, nil
}

// ioFailure reports a failed object request: a broken connection is a
// system failure, anything else a failure of the command.
func ioFailure(what string, err error) error {
	if errors.Is(err, client.ErrClosed) {
		return failf(exitSysfail, "%s: %v", what, err)
	}
	return failf(exitFailure, "%s: %s", what, proto.ResultOf(err))
}

// nextChunk is the length of the chunk starting at pos, ending at the next
// ioChunk boundary or at end.
func nextChunk(pos, end uint64) int {
	return int(min(end, (pos/ioChunk+1)*ioChunk) - pos)
}

func vdiRead(s *session, args []string) error {
	name := args[0]
	offset, length, err := offsetArgs(args)
	if err != nil {
		return err
	}
	vid, err := s.openVdi(name, s.opts.snapID, s.opts.snapTag)
	if err != nil {
		return err
	}
	vol, err := s.openVolume(vid, true, snapshotReadError(name, s.opts.snapID, s.opts.snapTag))
	if err != nil {
		return err
	}
	size := uint64(vol.Size())
	if offset > size {
		return failf(exitFailure, "Read offset is beyond the end of the VDI")
	}
	end := offset + min(length, size-offset)

	type job struct {
		buf  []byte
		err  error
		done chan struct{}
	}
	pool := make(chan []byte, ioWindow+1)
	for range ioWindow + 1 {
		pool <- make([]byte, ioChunk)
	}
	jobs := make(chan *job, ioWindow)
	stop := make(chan struct{})
	go func() {
		defer close(jobs)
		for pos := offset; pos < end; {
			n := nextChunk(pos, end)
			var buf []byte
			select {
			case buf = <-pool:
			case <-stop:
				return
			}
			j := &job{buf: buf[:n], done: make(chan struct{})}
			go func(off int64) {
				if _, err := vol.ReadAtContext(s.ctx, j.buf, off); err != nil && err != io.EOF {
					j.err = err
				}
				close(j.done)
			}(int64(pos))
			select {
			case jobs <- j:
			case <-stop:
				return
			}
			pos += uint64(n)
		}
	}()
	prog := newProgress(s.stderr, end-offset)
	defer prog.finish()
	done := uint64(0)
	for j := range jobs {
		<-j.done
		if j.err != nil {
			close(stop)
			return ioFailure("Failed to read VDI", j.err)
		}
		if _, err := s.out.Write(j.buf); err != nil {
			close(stop)
			return failf(exitSysfail, "Failed to write to stdout: %v", err)
		}
		done += uint64(len(j.buf))
		prog.update(done)
		pool <- j.buf[:cap(j.buf)]
	}
	return nil
}

func vdiWrite(s *session, args []string) error {
	name := args[0]
	offset, length, err := offsetArgs(args)
	if err != nil {
		return err
	}
	vid, err := s.openVdi(name, 0, "")
	if err != nil {
		return err
	}
	vol, err := s.openVolume(vid, false, snapshotReadError(name, 0, ""))
	if err != nil {
		return err
	}
	if s.opts.writeback {
		vol.Flags |= proto.FlagCmdCache
	}
	size := uint64(vol.Size())
	if offset > size {
		return failf(exitFailure, "Write offset is beyond the end of the VDI")
	}
	end := offset + min(length, size-offset)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return firstErr != nil }
	pool := make(chan []byte, ioWindow)
	for range ioWindow {
		pool <- make([]byte, ioChunk)
	}
	prog := newProgress(s.stderr, end-offset)
	var done uint64
	var readErr error
	for pos := offset; pos < end && !failed(); {
		buf := <-pool
		n := nextChunk(pos, end)
		got, err := io.ReadFull(s.stdin, buf[:n])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			readErr = failf(exitSysfail, "Failed to read from stdin: %v", err)
		}
		if got == 0 {
			pool <- buf
			break
		}
		wg.Add(1)
		go func(p []byte, off int64) {
			defer wg.Done()
			_, err := vol.WriteAtContext(s.ctx, p, off)
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			done += uint64(len(p))
			prog.update(done)
			mu.Unlock()
			pool <- p[:cap(p)]
		}(buf[:got], int64(pos))
		pos += uint64(got)
		if got < n || readErr != nil {
			break // end of input: this was the last piece
		}
	}
	wg.Wait()
	prog.finish()
	if firstErr != nil {
		return ioFailure("Failed to write VDI", firstErr)
	}
	return readErr
}

// progress draws dog's progress bar on stderr, only when stderr is a
// terminal and the transfer has run for more than progressDelay.
type progress struct {
	mu      sync.Mutex
	f       *os.File
	total   uint64
	done    uint64
	start   time.Time
	last    time.Time
	shown   bool
	enabled bool
}

const progressDelay = 2 * time.Second

func newProgress(w any, total uint64) *progress {
	p := &progress{total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.f, p.enabled = f, true
		}
	}
	return p
}

func (p *progress) width() int {
	ws, err := unix.IoctlGetWinsize(int(p.f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}

// update records done bytes; it may be called from several goroutines.
func (p *progress) update(done uint64) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = max(p.done, done)
	now := time.Now()
	if now.Sub(p.start) < progressDelay || now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = now, true
	p.f.WriteString("\r" + progressLine(p.done, p.total, p.width()))
}

// finish ends a bar that was shown with its final state and a newline.
func (p *progress) finish() {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		p.f.WriteString("\r" + progressLine(p.done, p.total, p.width()) + "\n")
		p.shown = false
	}
}
