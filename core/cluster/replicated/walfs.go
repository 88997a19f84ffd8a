package replicated

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
	"golang.org/x/sys/unix"
)

// segmentPrefix begins the name of every raft log segment file in
// Dir/raft/wal. raft-wal names its segments by number alone
// (00000000000000000001-0000000000000001.wal), and a name that begins with
// "/00" and 14 hex digits is what Sheepdog's tools and its functional suite
// take for a data object anywhere under a store dir (its _node_info counts
// them with find $STORE/N | grep /00[0-9a-f]{14}); with the prefix no
// component of a raft path starts like an object ID.
const segmentPrefix = "raftlog-"

// prefixFS is raft-wal's VFS with segmentPrefix in front of every file name
// on disk; raft-wal sees the names it made. It draws on reserve for the room
// of a new segment when the filesystem has none.
type prefixFS struct {
	types.VFS
	reserve *logReserve
}

// ListDir lists the segment files of dir, without their prefix, in
// lexicographical order (a common prefix keeps the order). Files without
// the prefix are not raft-wal's and are left out.
func (p prefixFS) ListDir(dir string) ([]string, error) {
	names, err := p.VFS.ListDir(dir)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if s, ok := strings.CutPrefix(n, segmentPrefix); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// segmentSlack is the room a segment file is given past its size: raft-wal
// writes the batch of entries that crosses a segment's size limit whole,
// into the same segment, before it seals it, so a segment's last batch
// goes past the size it was made with. A leader's batches are the few
// entries proposed together, of a few hundred bytes each; a follower
// catching up may append more at once, and what does not fit the slack
// takes its blocks when written (which a full store may refuse: the
// append fails, and the leader sends it again).
const segmentSlack = 4 << 10

// Create creates segment name (prefixed) in dir, allocated at its full
// size and segmentSlack past it: the log's room is taken when the segment
// starts, so that a node whose store filesystem fills up (another
// process's files, or its own objects) still appends cluster entries until
// the segment is full, and stays a working member (Sheepdog's functional
// test 042 fills two stores with dd and creates a VDI through one of
// them). When the filesystem has no room for the segment, the reserve
// gives its own; it is taken back when room returns (a segment deleted,
// the next segment made).
func (p prefixFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := p.create(dir, name, size)
	if errors.Is(err, syscall.ENOSPC) && p.reserve.release() {
		f, err = p.create(dir, name, size)
	}
	if err == nil {
		p.reserve.fill()
	}
	return f, err
}

func (p prefixFS) create(dir, name string, size uint64) (types.WritableFile, error) {
	path := filepath.Join(dir, segmentPrefix+name)
	f, err := p.VFS.Create(dir, segmentPrefix+name, size)
	if err == nil {
		if err = allocatePastEnd(path, int64(size), segmentSlack); err != nil {
			f.Close()
		}
	}
	if errors.Is(err, syscall.ENOSPC) {
		// The file was made before its allocation failed (raft-wal's
		// Create does not remove it either); it is new and holds nothing.
		os.Remove(path)
	}
	return f, err
}

// allocatePastEnd allocates n bytes of path from off without changing its
// size. A filesystem without fallocate gets the blocks when they are
// written.
func allocatePastEnd(path string, off, n int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	return nil
}

// Delete deletes segment name (prefixed) in dir, and refills the reserve
// with the room it frees if the reserve was spent.
func (p prefixFS) Delete(dir, name string) error {
	err := p.VFS.Delete(dir, segmentPrefix+name)
	if err == nil {
		p.reserve.fill()
	}
	return err
}

// OpenReader opens segment name (prefixed) in dir for reading.
func (p prefixFS) OpenReader(dir, name string) (types.ReadableFile, error) {
	return p.VFS.OpenReader(dir, segmentPrefix+name)
}

// OpenWriter opens segment name (prefixed) in dir for writing.
func (p prefixFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	return p.VFS.OpenWriter(dir, segmentPrefix+name)
}

// newWALFS returns the VFS raft's log uses: the OS's, with prefixed names,
// drawing on reserve.
func newWALFS(reserve *logReserve) types.VFS { return prefixFS{fs.New(), reserve} }

// logReserveName is the reserve's file in Dir/raft.
const logReserveName = "log-reserve"

// logReserve is a file that holds the room of one log segment (its size
// and segmentSlack), allocated
// while the store filesystem has room, and given up when a new segment
// finds none: with it a node whose store filled up still starts the next
// segment of cluster entries. Its methods are safe for concurrent use; a
// nil reserve has no room to give.
type logReserve struct {
	mu   sync.Mutex
	path string
	size int64
}

// fill allocates the reserve if it is not allocated in full. It gives up
// quietly on a full filesystem: the next fill tries again.
func (r *logReserve) fill() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() >= r.size {
		return
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, r.size); err != nil {
		// A part allocated is no reserve: nothing uses it but release.
		f.Truncate(0)
	}
}

// release frees the reserve's room, and reports whether it had any.
func (r *logReserve) release() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Stat(r.path)
	if err != nil || fi.Size() == 0 {
		return false
	}
	return os.Truncate(r.path, 0) == nil
}

// migrateSegmentNames renames the segment files a sheep of an earlier
// version left in dir under raft-wal's own names (NNN-ID.wal) to the
// prefixed names, so that an upgraded node finds its raft log. Each rename
// is atomic; a crash half-way leaves some files renamed and the rest are
// renamed at the next start. A name that exists under both forms is an
// error: neither copy is dropped.
func migrateSegmentNames(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	renamed := false
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".wal") || strings.HasPrefix(n, segmentPrefix) {
			continue
		}
		to := filepath.Join(dir, segmentPrefix+n)
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("raft log segment %s exists as %s too", n, segmentPrefix+n)
		}
		if err := os.Rename(filepath.Join(dir, n), to); err != nil {
			return fmt.Errorf("rename raft log segment: %w", err)
		}
		renamed = true
	}
	if !renamed {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
