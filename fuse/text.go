package fuse

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// reportFile is a read-only file holding the output of a collie command
// against the current sheep: /cluster/info, /vdi/list, /node/list and
// /node/info. Every open runs the command again, so a reader sees the
// cluster as it is then, with the exact text collie prints.
type reportFile struct {
	fs.Inode
	fsys *FS
	args []string

	// last is the most recent output, for stat: sizes stay close to what
	// an open will read without running collie for every ls -l.
	mu struct {
		sync.Mutex
		text []byte
		at   time.Time
	}
}

// statFreshness is how long a report's size may be reused by stat.
const statFreshness = time.Second

var (
	_ fs.NodeOpener    = (*reportFile)(nil)
	_ fs.NodeGetattrer = (*reportFile)(nil)
)

func (f *FS) collieFile(args ...string) *reportFile {
	return &reportFile{fsys: f, args: args}
}

// render runs collie. A failing collie (no sheep, cluster not formatted)
// still gives a file: what it printed on stdout, then on stderr.
func (r *reportFile) render() []byte {
	f := r.fsys
	var text []byte
	if f.cfg.Collie == "" {
		text = []byte("sheepfs: collie not found (install it next to sheepfs or on PATH)\n")
	} else {
		ctx, cancel := f.opContext()
		defer cancel()
		host, port := splitAddr(f.sheep.Addr())
		cmd := exec.CommandContext(ctx, f.cfg.Collie, append(append([]string{}, r.args...), "-a", host, "-p", port)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			f.log.Warn("collie failed", "args", strings.Join(r.args, " "), "err", err, "stderr", strings.TrimSpace(stderr.String()))
			if stderr.Len() == 0 {
				stderr.WriteString("sheepfs: collie " + strings.Join(r.args, " ") + ": " + err.Error() + "\n")
			}
			stdout.Write(stderr.Bytes())
		}
		text = stdout.Bytes()
	}
	r.mu.Lock()
	r.mu.text, r.mu.at = text, time.Now()
	r.mu.Unlock()
	return text
}

func (r *reportFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	return &textHandle{text: r.render(), at: time.Now()}, gofuse.FOPEN_DIRECT_IO, 0
}

func (r *reportFile) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	var text []byte
	var at time.Time
	if h, ok := fh.(*textHandle); ok {
		text, at = h.text, h.at
	} else {
		r.mu.Lock()
		text, at = r.mu.text, r.mu.at
		r.mu.Unlock()
		if time.Since(at) > statFreshness {
			text = r.render()
			at = time.Now()
		}
	}
	r.fsys.setAttr(out, syscall.S_IFREG|0o444, at)
	out.Size = uint64(len(text))
	out.SetTimeout(0)
	return 0
}

// textHandle is an open report or control file: the text as it was at
// open.
type textHandle struct {
	text []byte
	at   time.Time
}

var _ fs.FileReader = (*textHandle)(nil)

func (h *textHandle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.text)) {
		return gofuse.ReadResultData(nil), 0
	}
	return gofuse.ReadResultData(h.text[off:min(int64(len(h.text)), off+int64(len(dest)))]), 0
}

// controlFile is a small file that does something when written to, one
// line at a time (/vdi/mount, /vdi/unmount, /config/*). Each write is
// acted on before it returns, so `echo NAME > vdi/mount` reports the
// failure from write(2) rather than from a close nobody checks.
type controlFile struct {
	fs.Inode
	fsys  *FS
	mode  uint32
	read  func() string                                        // nil: reads are empty
	write func(ctx context.Context, line string) syscall.Errno // nil: read-only
}

var (
	_ fs.NodeOpener    = (*controlFile)(nil)
	_ fs.NodeGetattrer = (*controlFile)(nil)
	_ fs.NodeSetattrer = (*controlFile)(nil)
)

func (c *controlFile) content() []byte {
	if c.read == nil {
		return nil
	}
	return []byte(c.read())
}

func (c *controlFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY && c.write == nil {
		return nil, 0, syscall.EACCES
	}
	return &controlHandle{textHandle: textHandle{text: c.content()}, c: c}, gofuse.FOPEN_DIRECT_IO, 0
}

func (c *controlFile) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	c.fsys.setAttr(out, syscall.S_IFREG|c.mode, c.fsys.started)
	out.Size = uint64(len(c.content()))
	out.SetTimeout(0)
	return 0
}

// Setattr accepts the truncation that `echo x > file` asks for: the
// content is not stored, so there is nothing to cut.
func (c *controlFile) Setattr(ctx context.Context, fh fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	return c.Getattr(ctx, fh, out)
}

// controlHandle is an open control file.
type controlHandle struct {
	textHandle
	c *controlFile
}

var _ fs.FileWriter = (*controlHandle)(nil)

func (h *controlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		octx, cancel := h.c.fsys.opContext()
		errno := h.c.write(octx, line)
		cancel()
		if errno != 0 {
			return 0, errno
		}
	}
	return uint32(len(data)), 0
}

func (f *FS) readSheepInfo() string { return f.sheep.Addr() + "\n" }

// writeSheepInfo switches to the sheep at "host:port" once it answers a
// connection; until then, and if it never does, the old one stays.
func (f *FS) writeSheepInfo(ctx context.Context, line string) syscall.Errno {
	host, port, err := net.SplitHostPort(line)
	if err != nil || host == "" {
		f.log.Warn("config/sheep_info: want host:port", "got", line)
		return syscall.EINVAL
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		f.log.Warn("config/sheep_info: bad port", "got", line)
		return syscall.EINVAL
	}
	if err := f.sheep.SetAddr(ctx, net.JoinHostPort(host, port), f.cfg.Timeout); err != nil {
		f.log.Warn("config/sheep_info: cannot reach the new sheep", "addr", line, "err", err)
		return ctlErrno(err)
	}
	f.log.Info("talking to a new sheep", "addr", line)
	return 0
}

func (f *FS) readPageCache() string {
	if f.pageCache.Load() {
		return "1\n"
	}
	return "0\n"
}

// writePageCache sets how volumes opened from now on are read and
// written: through the kernel page cache ("1") or with direct I/O ("0").
func (f *FS) writePageCache(ctx context.Context, line string) syscall.Errno {
	switch line {
	case "0":
		f.pageCache.Store(false)
	case "1":
		f.pageCache.Store(true)
	default:
		return syscall.EINVAL
	}
	return 0
}
