package fuse

import (
	"context"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// scanCache keeps the last VDI listing for a moment, so that ls -l over
// /snapshot costs one scan of the cluster rather than one per entry.
type scanCache struct {
	mu   sync.Mutex
	vdis []vdiInfo
	at   time.Time
}

// vdis lists the live VDIs, from the cache when it is fresh.
func (f *FS) vdis() ([]vdiInfo, syscall.Errno) {
	c := &f.scan
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vdis != nil && time.Since(c.at) < statFreshness {
		return c.vdis, 0
	}
	ctx, cancel := f.opContext()
	defer cancel()
	vdis, err := f.sheep.listVdis(ctx)
	if err != nil {
		f.log.Warn("list VDIs", "err", err)
		return nil, ioErrno(err)
	}
	c.vdis, c.at = vdis, time.Now()
	return vdis, 0
}

// snapshotsOf returns the snapshots named name, oldest first.
func (f *FS) snapshotsOf(name string) ([]vdiInfo, syscall.Errno) {
	vdis, errno := f.vdis()
	if errno != 0 {
		return nil, errno
	}
	var out []vdiInfo
	for _, v := range vdis {
		if v.Snap && v.Name == name {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b vdiInfo) int { return int(a.SnapID) - int(b.SnapID) })
	return out, 0
}

// Inode numbers of /snapshot entries: derived from what they show, so
// that repeated lookups find the same inode (and a snapshot's loaded
// table is reused). They stay below go-fuse's automatic numbers (2^63).
const (
	snapFileIno = 1 << 61 // | vid
	snapDirIno  = 1 << 62 // | hash of the name
)

func snapDirInoOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return snapDirIno | h.Sum64()&(snapDirIno-1)
}

// snapshotRoot is /snapshot: a directory for every VDI name that has
// snapshots.
type snapshotRoot struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeReaddirer = (*snapshotRoot)(nil)
	_ fs.NodeLookuper  = (*snapshotRoot)(nil)
	_ fs.NodeGetattrer = (*snapshotRoot)(nil)
	_ fs.NodeUnlinker  = (*snapshotRoot)(nil)
	_ fs.NodeRmdirer   = (*snapshotRoot)(nil)
)

func (r *snapshotRoot) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	r.fsys.setAttr(out, syscall.S_IFDIR|0o555, r.fsys.started)
	return 0
}

func (r *snapshotRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	vdis, errno := r.fsys.vdis()
	if errno != 0 {
		return nil, errno
	}
	seen := map[string]bool{}
	var list []gofuse.DirEntry
	for _, v := range vdis {
		if !v.Snap || seen[v.Name] || !usableName(v.Name) {
			continue
		}
		seen[v.Name] = true
		list = append(list, gofuse.DirEntry{Name: v.Name, Mode: syscall.S_IFDIR, Ino: snapDirInoOf(v.Name)})
	}
	slices.SortFunc(list, func(a, b gofuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return fs.NewListDirStream(list), 0
}

func (r *snapshotRoot) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	snaps, errno := r.fsys.snapshotsOf(name)
	if errno != 0 {
		return nil, errno
	}
	if len(snaps) == 0 {
		return nil, syscall.ENOENT
	}
	d := &snapshotDir{fsys: r.fsys, name: name}
	var a gofuse.AttrOut
	d.Getattr(ctx, nil, &a)
	out.Attr = a.Attr
	return r.NewInode(ctx, d, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: snapDirInoOf(name)}), 0
}

func (r *snapshotRoot) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }
func (r *snapshotRoot) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EROFS }

// usableName reports whether a VDI name or tag can be a file name.
func usableName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// snapshotDir is /snapshot/NAME: a read-only file per snapshot, named by
// its id, and a symlink per tag pointing at the id.
type snapshotDir struct {
	fs.Inode
	fsys *FS
	name string
}

var (
	_ fs.NodeReaddirer = (*snapshotDir)(nil)
	_ fs.NodeLookuper  = (*snapshotDir)(nil)
	_ fs.NodeGetattrer = (*snapshotDir)(nil)
	_ fs.NodeUnlinker  = (*snapshotDir)(nil)
)

func (d *snapshotDir) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(out, syscall.S_IFDIR|0o555, d.fsys.started)
	return 0
}

func (d *snapshotDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

// tagLinks are the tags that get a symlink: usable as file names, not
// all digits (an id would shadow them) and not used twice.
func tagLinks(snaps []vdiInfo) map[string]uint32 {
	count := map[string]int{}
	for _, s := range snaps {
		count[s.Tag]++
	}
	links := map[string]uint32{}
	for _, s := range snaps {
		if usableName(s.Tag) && !isDigits(s.Tag) && count[s.Tag] == 1 {
			links[s.Tag] = s.SnapID
		}
	}
	return links
}

func (d *snapshotDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	snaps, errno := d.fsys.snapshotsOf(d.name)
	if errno != 0 {
		return nil, errno
	}
	var list []gofuse.DirEntry
	for _, s := range snaps {
		list = append(list, gofuse.DirEntry{Name: strconv.FormatUint(uint64(s.SnapID), 10), Mode: syscall.S_IFREG, Ino: snapFileIno | uint64(s.Vid)})
	}
	for tag := range tagLinks(snaps) {
		list = append(list, gofuse.DirEntry{Name: tag, Mode: syscall.S_IFLNK})
	}
	return fs.NewListDirStream(list), 0
}

func (d *snapshotDir) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	snaps, errno := d.fsys.snapshotsOf(d.name)
	if errno != 0 {
		return nil, errno
	}
	if id, ok := tagLinks(snaps)[name]; ok {
		target := []byte(strconv.FormatUint(uint64(id), 10))
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(len(target))
		return d.NewInode(ctx, &fs.MemSymlink{Data: target}, fs.StableAttr{Mode: syscall.S_IFLNK}), 0
	}
	for _, s := range snaps {
		if strconv.FormatUint(uint64(s.SnapID), 10) != name {
			continue
		}
		v := &volumeFile{fsys: d.fsys, name: d.name + ":" + name, target: proto.VdiRef{Name: d.name, SnapID: s.SnapID},
			fixed: true, sizeHint: s.Size, ctimeHint: s.Ctime}
		v.mu.vid = s.Vid
		ch := d.NewInode(ctx, v, fs.StableAttr{Mode: syscall.S_IFREG, Ino: snapFileIno | uint64(s.Vid)})
		// The inode may be an earlier one for the same snapshot.
		var a gofuse.AttrOut
		if errno := ch.Operations().(fs.NodeGetattrer).Getattr(ctx, nil, &a); errno == 0 {
			out.Attr = a.Attr
		}
		return ch, 0
	}
	return nil, syscall.ENOENT
}

// isDigits reports whether s is a decimal number: as a path element it
// would read as a snapshot id, never as a tag (proto.VdiRefReadings).
func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
