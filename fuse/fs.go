// Package fuse is sheepfs: a cluster and its volumes as a FUSE file system
// (github.com/hanwen/go-fuse/v2), for plain tools such as cat, dd, cp and
// cmp. It is a client of the native protocol, like collie, so it runs on
// any machine that reaches a sheep.
//
// The tree keeps Sheepdog's layout (docs/protocol.md §9) and adds /snapshot:
//
//	/cluster/info          collie cluster info (fresh on every open)
//	/vdi/list              collie vdi list
//	/vdi/mount             write NAME, NAME:SNAPID or NAME:TAG: /volume/<that> appears
//	/vdi/unmount           write the same: it goes (rm /volume/<that> does too)
//	/node/list, /node/info collie node list / node info
//	/volume/NAME           the VDI as a file of its size (snapshots read-only)
//	/snapshot/NAME/SNAPID  every snapshot, read-only, without a mount;
//	/snapshot/NAME/TAG     a symlink to the SNAPID of a tagged snapshot
//	/config/sheep_info     "host:port" of the sheep (write to switch)
//	/config/page_cache     "0" (direct I/O, the default) or "1" (kernel page cache)
//
// Volume files behave like the block device the VDI is: the size is the
// VDI size and does not change (truncate and O_TRUNC leave it and the data
// alone, as on a block device; growing fails with EFBIG), holes read as
// zeros, writes allocate objects copy-on-write through core/volume, fsync
// makes them stable, SEEK_DATA/SEEK_HOLE report holes at object
// granularity and fallocate punches holes (Discard) or zeroes ranges.
package fuse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// Config is what a sheepfs mount is started with.
type Config struct {
	// Addr is the "host:port" of the sheep to talk to.
	Addr string
	// Collie is the collie binary that renders /cluster/info, /vdi/list,
	// /node/list and /node/info. Empty: those files say it is missing.
	Collie string
	// PageCache opens volumes through the kernel page cache instead of
	// with direct I/O (the initial value of /config/page_cache).
	PageCache bool
	// Timeout bounds every request sheepfs makes for one file system
	// operation: a sheep that stops answering gives EIO after it, not a
	// hung process.
	Timeout time.Duration
	// AllowOther lets every user in, not just the one who mounted. The
	// kernel then checks the modes: everyone may read the reports, only
	// the owner may touch volumes, vdi/mount and the config.
	AllowOther bool
	// Log receives what sheepfs cannot report through an errno alone.
	Log *slog.Logger
	// Metrics records volume reads, writes and fsyncs (nil: none).
	Metrics *metrics.Frontend
	// ObjectCache sends volume writes with the CACHE flag, so that a
	// sheep with its object cache on (sheep -w) holds them until fsync,
	// which then sends FLUSH_VDI (Sheepdog's sheepfs --objectcache).
	ObjectCache bool
}

// DefaultConfig is a mount of the sheep on 127.0.0.1:7000.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:7000", Timeout: 30 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// FS is one sheepfs file system.
type FS struct {
	cfg       Config
	log       *slog.Logger
	sheep     *sheep
	objects   objects
	pageCache atomic.Bool

	root     *rootDir
	volumes  *fs.Inode // /volume
	mountsMu sync.Mutex

	scan scanCache
	// started is the time directories and control files report.
	started time.Time
}

// New returns a file system for cfg; zero fields take DefaultConfig's
// values. Nothing is dialled until the first request.
func New(cfg Config) *FS {
	def := DefaultConfig()
	if cfg.Addr == "" {
		cfg.Addr = def.Addr
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.Log == nil {
		cfg.Log = def.Log
	}
	f := &FS{cfg: cfg, log: cfg.Log, sheep: newSheep(cfg.Addr, cfg.Timeout), started: time.Now()}
	f.objects = objects{s: f.sheep}
	f.pageCache.Store(cfg.PageCache)
	f.root = &rootDir{fsys: f}
	return f
}

// Root is the root directory node, for fs.Mount.
func (f *FS) Root() fs.InodeEmbedder { return f.root }

// Close flushes every mounted volume and closes the connection.
func (f *FS) Close() {
	if f.volumes != nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
		for _, ch := range f.volumes.Children() {
			if v, ok := ch.Operations().(*volumeFile); ok {
				if err := v.flush(ctx); err != nil {
					f.log.Warn("flush at exit", "volume", v.name, "err", err)
				}
			}
		}
		cancel()
	}
	f.sheep.Close()
}

// opContext bounds the requests of one file system operation by the
// timeout. It deliberately does not derive from the context go-fuse
// passes: that one is cancelled when the calling process is interrupted,
// and an abandoned request makes core/client drop the connection, failing
// every other process's requests on it too.
func (f *FS) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.cfg.Timeout)
}

// rootDir is "/": its layout is built once when it is mounted.
type rootDir struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeOnAdder   = (*rootDir)(nil)
	_ fs.NodeGetattrer = (*rootDir)(nil)
)

func (r *rootDir) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	r.fsys.setAttr(out, syscall.S_IFDIR|0o755, r.fsys.started)
	return 0
}

// setAttr fills what every node reports alike: mode, link count, times.
func (f *FS) setAttr(out *gofuse.AttrOut, mode uint32, t time.Time) {
	out.Mode = mode
	out.Nlink = 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		out.Nlink = 2
	}
	out.SetTimes(&t, &t, &t)
}

func (r *rootDir) OnAdd(ctx context.Context) {
	f := r.fsys
	dir := func(parent *fs.Inode, name string, node fs.InodeEmbedder) *fs.Inode {
		if node == nil {
			node = &staticDir{fsys: f}
		}
		ch := parent.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR})
		parent.AddChild(name, ch, false)
		return ch
	}
	file := func(parent *fs.Inode, name string, node fs.InodeEmbedder) {
		parent.AddChild(name, parent.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
	root := &r.Inode

	cluster := dir(root, "cluster", nil)
	file(cluster, "info", f.collieFile("cluster", "info"))

	vdi := dir(root, "vdi", nil)
	file(vdi, "list", f.collieFile("vdi", "list"))
	file(vdi, "mount", &controlFile{fsys: f, mode: 0o200, write: f.mountLine})
	file(vdi, "unmount", &controlFile{fsys: f, mode: 0o200, write: f.unmountLine})

	node := dir(root, "node", nil)
	file(node, "list", f.collieFile("node", "list"))
	file(node, "info", f.collieFile("node", "info"))

	config := dir(root, "config", nil)
	file(config, "sheep_info", &controlFile{fsys: f, mode: 0o644, read: f.readSheepInfo, write: f.writeSheepInfo})
	file(config, "page_cache", &controlFile{fsys: f, mode: 0o644, read: f.readPageCache, write: f.writePageCache})

	f.volumes = dir(root, "volume", &volumeDir{fsys: f})
	dir(root, "snapshot", &snapshotRoot{fsys: f})
}

// ioErrno is the errno a failed volume read, write or flush returns. Only
// errors the caller can act on keep their own errno; everything else,
// a broken or timed-out connection included, is EIO.
func ioErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, volume.ErrReadOnly):
		return syscall.EROFS
	}
	switch proto.ResultOf(err) {
	case proto.ResReadonly:
		return syscall.EROFS
	case proto.ResInvalidParms:
		return syscall.EINVAL
	case proto.ResNoSpace:
		return syscall.ENOSPC
	}
	return syscall.EIO
}

// ctlErrno is the errno a failed control operation (mount, unmount, a
// config write) returns: a connection error keeps its errno (ECONNREFUSED
// says more than EIO there), and the result codes map to what they mean.
func ctlErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return syscall.ETIMEDOUT
	}
	if errors.Is(err, client.ErrClosed) {
		return syscall.EIO
	}
	switch proto.ResultOf(err) {
	case proto.ResNoVdi, proto.ResNoTag, proto.ResNoObj:
		return syscall.ENOENT
	case proto.ResInvalidParms:
		return syscall.EINVAL
	case proto.ResVdiLocked:
		return syscall.EBUSY
	}
	return ioErrno(err)
}
