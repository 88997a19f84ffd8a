package main

import (
	"context"
	"errors"
	"fmt"
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

// openVolume opens vid over the session's connection. Its object requests
// fail with an *objectError, which ioFailure reports as dog does.
func (s *session) openVolume(vid uint32, readOnly bool, what string) (*volume.Volume, error) {
	objs, err := s.objects()
	if err != nil {
		return nil, err
	}
	vol, err := volume.Open(s.ctx, namedObjects{objs}, vid, readOnly)
	if err != nil {
		return nil, failf(ioExit(err), "%s: %s", what, proto.ResultOf(err))
	}
	return vol, nil
}

// ioExit is the exit code of a failed object request: a broken connection
// is a system failure, anything else a failure of the command.
func ioExit(err error) int {
	if errors.Is(err, client.ErrClosed) {
		return exitSysfail
	}
	return exitFailure
}

// ioFailure reports a failed vdi read or write as dog does: the object
// request that failed (dog_read_object's or dog_write_object's line), then
// what failed. A failed update of the inode's table is its object line
// alone (dog's sd_inode_write_vid).
func ioFailure(what string, err error) error {
	var oe *objectError
	if !errors.As(err, &oe) {
		return failf(ioExit(err), "%s: %s", what, proto.ResultOf(err))
	}
	var line string
	switch {
	case !oe.write && errors.Is(err, client.ErrClosed):
		line = fmt.Sprintf("Failed to read object %016x", oe.oid)
	case !oe.write:
		line = fmt.Sprintf("Failed to read object %016x %s", oe.oid, proto.ResultOf(err))
	case errors.Is(err, client.ErrClosed):
		line = fmt.Sprintf("Failed to write object %016x", oe.oid)
	default:
		line = fmt.Sprintf("Failed to write object %016x: %s", oe.oid, proto.ResultOf(err))
	}
	if proto.IsVdiObj(oe.oid) && oe.write {
		return failf(ioExit(err), "%s", line)
	}
	return failf(ioExit(err), "%s\n%s", line, what)
}

// objectError is a failed request for one object.
type objectError struct {
	write bool
	oid   uint64
	err   error
}

func (e *objectError) Error() string { return e.err.Error() }
func (e *objectError) Unwrap() error { return e.err }

// namedObjects is client.Objects whose failures say which object failed
// (objectError).
type namedObjects struct{ client.Objects }

func named(write bool, oid uint64, err error) error {
	if err == nil {
		return nil
	}
	return &objectError{write: write, oid: oid, err: err}
}

func (o namedObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	return named(false, oid, o.Objects.ReadObject(ctx, oid, off, buf))
}

func (o namedObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	return named(true, oid, o.Objects.WriteObject(ctx, oid, off, data, flags))
}

func (o namedObjects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	return named(true, oid, o.Objects.CreateAndWrite(ctx, oid, cowFrom, off, data, flags))
}

func (o namedObjects) RemoveObject(ctx context.Context, oid uint64) error {
	return named(true, oid, o.Objects.RemoveObject(ctx, oid))
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
