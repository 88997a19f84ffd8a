package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// parseTarget reads a line written to /vdi/mount: NAME, NAME:SNAPID or
// NAME:TAG, by the rule NBD export names follow too
// (proto.VdiRefReadings), whose readings mountLine tries in order. The
// whole line becomes the file name under /volume, so it must be one.
func parseTarget(s string) ([]proto.VdiRef, error) {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00") {
		return nil, fmt.Errorf("%q is not a usable volume name", s)
	}
	refs := proto.VdiRefReadings(s)
	if len(refs) == 0 {
		return nil, fmt.Errorf("%.40q...: name or tag longer than %d bytes", s, proto.MaxVdiLen-1)
	}
	return refs, nil
}

// mountLine makes /volume/<line> appear for the VDI it names. Mounting
// what is already mounted does nothing, as in Sheepdog.
func (f *FS) mountLine(ctx context.Context, line string) syscall.Errno {
	refs, err := parseTarget(line)
	if err != nil {
		f.log.Warn("vdi/mount", "err", err)
		return syscall.EINVAL
	}
	f.mountsMu.Lock()
	defer f.mountsMu.Unlock()
	if f.volumes.GetChild(line) != nil {
		return 0
	}
	var v *volumeFile
	for _, r := range refs {
		v = &volumeFile{fsys: f, name: line, target: r, fixed: r.Snapshot()}
		// The first reading that names an existing VDI wins.
		if err = v.load(ctx); err == nil || !errors.Is(err, proto.ResNoVdi) && !errors.Is(err, proto.ResNoTag) {
			break
		}
	}
	if err != nil {
		f.log.Warn("vdi/mount failed", "vdi", line, "err", err)
		return ctlErrno(err)
	}
	ch := f.volumes.NewPersistentInode(ctx, v, fs.StableAttr{Mode: syscall.S_IFREG})
	f.volumes.AddChild(line, ch, false)
	// Drop a negative dentry the kernel may hold from a lookup before.
	f.volumes.NotifyEntry(line)
	f.log.Info("mounted", "volume", line, "vid", fmt.Sprintf("%x", v.vid()), "size", v.size())
	return 0
}

// unmountLine makes /volume/<line> go. Open handles keep working until
// they are closed.
func (f *FS) unmountLine(ctx context.Context, line string) syscall.Errno {
	if errno := f.unmount(ctx, line); errno != 0 {
		return errno
	}
	f.volumes.NotifyEntry(line)
	return 0
}

// unmount flushes and removes /volume/name. The kernel's dentry is the
// caller's business: unlink(2) drops it itself, a write to vdi/unmount
// must notify.
func (f *FS) unmount(ctx context.Context, name string) syscall.Errno {
	f.mountsMu.Lock()
	defer f.mountsMu.Unlock()
	ch := f.volumes.GetChild(name)
	if ch == nil {
		return syscall.ENOENT
	}
	if v, ok := ch.Operations().(*volumeFile); ok {
		if err := v.flush(ctx); err != nil {
			f.log.Warn("flush before unmount", "volume", name, "err", err)
		}
	}
	f.volumes.RmChild(name)
	// Let go-fuse drop the node (and the table it holds) once the kernel
	// forgets it; open handles keep their own reference to the volume.
	ch.ForgetPersistent()
	f.log.Info("unmounted", "volume", name)
	return 0
}

// staticDir is a directory of the fixed layout: nothing in it can be
// removed or renamed (go-fuse would otherwise drop the entry and report
// success).
type staticDir struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeUnlinker  = (*staticDir)(nil)
	_ fs.NodeRmdirer   = (*staticDir)(nil)
	_ fs.NodeGetattrer = (*staticDir)(nil)
)

func (d *staticDir) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(out, syscall.S_IFDIR|0o755, d.fsys.started)
	return 0
}

func (d *staticDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *staticDir) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

// volumeDir is /volume: one file per mounted VDI. rm unmounts.
type volumeDir struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeUnlinker  = (*volumeDir)(nil)
	_ fs.NodeRmdirer   = (*volumeDir)(nil)
	_ fs.NodeGetattrer = (*volumeDir)(nil)
)

func (d *volumeDir) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(out, syscall.S_IFDIR|0o755, d.fsys.started)
	return 0
}

func (d *volumeDir) Unlink(ctx context.Context, name string) syscall.Errno {
	octx, cancel := d.fsys.opContext()
	defer cancel()
	return d.fsys.unmount(octx, name)
}

func (d *volumeDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.ENOTDIR }

// volumeFile is a VDI as a file: /volume/NAME, or a file under /snapshot.
//
// A working VDI is looked up by name again, and its inode (with the
// data_vdi_id table that says which objects exist) read again, whenever it
// is opened while no handle is open: what collie or another client wrote
// in between is then visible, and handles open at the same time share one
// table, so two writers never both allocate the same object.
type volumeFile struct {
	fs.Inode
	fsys   *FS
	name   string // the file's name, for logs
	target proto.VdiRef
	// fixed: the vid never changes (a snapshot), so a loaded volume is
	// never reloaded.
	fixed bool
	// sizeHint and ctimeHint are what stat reports before the first open
	// (snapshots are listed from their headers, without the table).
	sizeHint  uint64
	ctimeHint time.Time

	mu struct {
		sync.Mutex
		vid   uint32
		vol   *volume.Volume // nil until loaded
		opens int
	}
}

var (
	_ fs.NodeOpener    = (*volumeFile)(nil)
	_ fs.NodeGetattrer = (*volumeFile)(nil)
	_ fs.NodeSetattrer = (*volumeFile)(nil)
)

func (v *volumeFile) vid() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.vid
}

func (v *volumeFile) size() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.vol != nil {
		return uint64(v.mu.vol.Size())
	}
	return v.sizeHint
}

// load resolves the target (unless the vid is fixed and known) and reads
// its inode.
func (v *volumeFile) load(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.loadLocked(ctx)
}

func (v *volumeFile) loadLocked(ctx context.Context) error {
	vid := v.mu.vid
	if !v.fixed || vid == 0 {
		var err error
		t := v.target
		if vid, err = v.fsys.sheep.lookup(ctx, t.Name, t.SnapID, t.Tag); err != nil {
			return err
		}
	}
	var oio volume.ObjectIO = v.fsys.objects
	cached := v.fsys.cfg.ObjectCache && !v.target.Snapshot()
	if cached {
		oio = cachedObjects{v.fsys.objects, vid}
	}
	vol, err := volume.Open(ctx, oio, vid, v.target.Snapshot())
	if err != nil {
		return err
	}
	if cached {
		vol.Flags |= proto.FlagCmdCache
	}
	v.mu.vid, v.mu.vol = vid, vol
	return nil
}

// readOnly reports whether writes are refused.
func (v *volumeFile) readOnly() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.target.Snapshot() || (v.mu.vol != nil && v.mu.vol.ReadOnly())
}

func (v *volumeFile) flush(ctx context.Context) error {
	v.mu.Lock()
	vol := v.mu.vol
	v.mu.Unlock()
	if vol == nil || vol.ReadOnly() {
		return nil
	}
	return vol.Flush(ctx)
}

func (v *volumeFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	writing := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if writing && v.target.Snapshot() {
		return nil, 0, syscall.EROFS
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.vol == nil || (v.mu.opens == 0 && !v.fixed) {
		octx, cancel := v.fsys.opContext()
		err := v.loadLocked(octx)
		cancel()
		if err != nil {
			v.fsys.log.Warn("open volume", "volume", v.name, "err", err)
			if errors.Is(err, proto.ResNoVdi) {
				return nil, 0, syscall.ENOENT
			}
			return nil, 0, ioErrno(err)
		}
	}
	vol := v.mu.vol
	if writing && vol.ReadOnly() {
		return nil, 0, syscall.EROFS
	}
	v.mu.opens++
	var fl uint32
	if !v.fsys.pageCache.Load() {
		fl = gofuse.FOPEN_DIRECT_IO | gofuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
	return &volumeHandle{f: v, vol: vol}, fl, 0
}

func (v *volumeFile) release() {
	v.mu.Lock()
	v.mu.opens--
	v.mu.Unlock()
}

// Getattr reports the VDI's size, its allocated objects as blocks (so du
// and ls -s show what the volume uses) and its creation time.
func (v *volumeFile) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	var vol *volume.Volume
	if h, ok := fh.(*volumeHandle); ok {
		vol = h.vol
	} else {
		v.mu.Lock()
		vol = v.mu.vol
		v.mu.Unlock()
	}
	// A disk image is its owner's business: no access for others.
	mode := uint32(syscall.S_IFREG | 0o600)
	if v.readOnly() {
		mode = syscall.S_IFREG | 0o400
	}
	out.Blksize = maxRequest
	if vol == nil {
		v.fsys.setAttr(out, mode, v.ctimeHint)
		out.Size = v.sizeHint
		return 0
	}
	ino := vol.Inode()
	v.fsys.setAttr(out, mode, time.Unix(proto.SheepTimeSeconds(ino.CreateTime), 0))
	out.Size = uint64(vol.Size())
	objSize := vol.ObjectSize()
	var used uint64
	for idx := int64(0); idx*objSize < vol.Size(); idx++ {
		if vol.Allocated(uint32(idx)) {
			used += uint64(objSize)
		}
	}
	out.Blocks = used / 512
	return 0
}

// Setattr accepts truncation to any size up to the VDI size and leaves the
// volume alone, as a block device does with O_TRUNC, so that dd and cp
// can write onto a volume without conv=notrunc. Growing (use collie vdi
// resize) and changing owner or mode are refused.
func (v *volumeFile) Setattr(ctx context.Context, fh fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if v.readOnly() {
			return syscall.EROFS
		}
		if sz > v.size() {
			return syscall.EFBIG
		}
	}
	if _, ok := in.GetMode(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetUID(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetGID(); ok {
		return syscall.EPERM
	}
	return v.Getattr(ctx, fh, out)
}

// volumeHandle is an open volume file. It keeps the volume it opened, so
// an unmount or a reload by a later open does not disturb it.
type volumeHandle struct {
	f   *volumeFile
	vol *volume.Volume
	// released guards against a double release.
	released sync.Once
}

var (
	_ fs.FileReader    = (*volumeHandle)(nil)
	_ fs.FileWriter    = (*volumeHandle)(nil)
	_ fs.FileFsyncer   = (*volumeHandle)(nil)
	_ fs.FileFlusher   = (*volumeHandle)(nil)
	_ fs.FileReleaser  = (*volumeHandle)(nil)
	_ fs.FileLseeker   = (*volumeHandle)(nil)
	_ fs.FileAllocater = (*volumeHandle)(nil)
)

// fail logs a failed volume operation and returns its errno.
func (h *volumeHandle) fail(op string, off int64, n int, err error) syscall.Errno {
	errno := ioErrno(err)
	h.f.fsys.log.Warn("volume I/O failed", "volume", h.f.name, "op", op, "offset", off, "len", n, "err", err, "errno", errno)
	return errno
}

func (h *volumeHandle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	octx, cancel := h.f.fsys.opContext()
	defer cancel()
	start := time.Now()
	n, err := h.vol.ReadAtContext(octx, dest, off)
	h.f.fsys.cfg.Metrics.Observe(opRead, 0, n, time.Since(start), err != nil && err != io.EOF)
	if err != nil && err != io.EOF {
		return nil, h.fail("read", off, len(dest), err)
	}
	return gofuse.ReadResultData(dest[:n]), 0
}

// Write writes what fits before the end of the VDI; a write that starts at
// or past the end fails with ENOSPC, as on a block device.
func (h *volumeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	size := h.vol.Size()
	if len(data) == 0 {
		return 0, 0
	}
	if off >= size {
		return 0, syscall.ENOSPC
	}
	data = data[:min(int64(len(data)), size-off)]
	octx, cancel := h.f.fsys.opContext()
	defer cancel()
	start := time.Now()
	_, err := h.vol.WriteAtContext(octx, data, off)
	h.f.fsys.cfg.Metrics.Observe(opWrite, len(data), 0, time.Since(start), err != nil)
	if err != nil {
		return 0, h.fail("write", off, len(data), err)
	}
	return uint32(len(data)), 0
}

func (h *volumeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.vol.ReadOnly() {
		return 0
	}
	octx, cancel := h.f.fsys.opContext()
	defer cancel()
	start := time.Now()
	err := h.vol.Flush(octx)
	h.f.fsys.cfg.Metrics.Observe(opFsync, 0, 0, time.Since(start), err != nil)
	if err != nil {
		return h.fail("fsync", 0, 0, err)
	}
	return 0
}

// Flush (close) has nothing to do: every write was sent before it
// returned.
func (h *volumeHandle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *volumeHandle) Release(ctx context.Context) syscall.Errno {
	h.released.Do(h.f.release)
	return 0
}

// whence values the kernel forwards to FUSE.
const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

func (h *volumeHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off > 1<<62 {
		return 0, syscall.ENXIO
	}
	// A stale hole would make cp --sparse skip data another writer put
	// there: read the table again from off on.
	octx, cancel := h.f.fsys.opContext()
	err := h.vol.Refresh(octx, int64(off), h.vol.Size()-int64(off))
	cancel()
	if err != nil {
		return 0, ioErrno(err)
	}
	pos, ok := seek(int64(off), h.vol.Size(), h.vol.ObjectSize(), h.vol.Allocated, whence == seekData)
	if !ok {
		return 0, syscall.ENXIO
	}
	return uint64(pos), 0
}

// seek is lseek's SEEK_DATA (data) or SEEK_HOLE (!data) on a VDI of size
// bytes cut into objects of objSize, where allocated says which exist:
// the first offset at or after off inside data or inside a hole. The end
// of the VDI counts as a hole. ok is false when off is at or past the end,
// or for SEEK_DATA when only holes follow (ENXIO).
func seek(off, size, objSize int64, allocated func(idx uint32) bool, data bool) (pos int64, ok bool) {
	if off < 0 || off >= size {
		return 0, false
	}
	for idx := off / objSize; idx*objSize < size; idx++ {
		if allocated(uint32(idx)) == data {
			return max(off, idx*objSize), true
		}
	}
	if data {
		return 0, false
	}
	return size, true
}

// fallocate modes (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// Allocate implements fallocate's PUNCH_HOLE (the range reads as zeros and
// whole objects are freed) and ZERO_RANGE (zeros, objects kept). Plain
// preallocation is not offered: it would have to write every object.
func (h *volumeHandle) Allocate(ctx context.Context, off, n uint64, mode uint32) syscall.Errno {
	if h.vol.ReadOnly() {
		return syscall.EROFS
	}
	size := uint64(h.vol.Size())
	if off >= size {
		return 0
	}
	n = min(n, size-off)
	octx, cancel := h.f.fsys.opContext()
	defer cancel()
	var err error
	switch mode {
	case fallocPunchHole | fallocKeepSize:
		err = h.vol.Discard(octx, int64(off), int64(n))
	case fallocZeroRange, fallocZeroRange | fallocKeepSize:
		err = h.vol.WriteZeroes(octx, int64(off), int64(n), true)
	default:
		return syscall.EOPNOTSUPP
	}
	if err != nil {
		return h.fail("fallocate", int64(off), int(n), err)
	}
	return 0
}

// The volume operations sheepfs records in its metrics.
const (
	opRead uint8 = iota
	opWrite
	opFsync
)

// MetricsOps names the volume operations for metrics.Registry.Frontend.
var MetricsOps = map[uint8]string{opRead: "read", opWrite: "write", opFsync: "fsync"}
