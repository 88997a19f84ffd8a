package replicated

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
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
// on disk; raft-wal sees the names it made.
type prefixFS struct{ types.VFS }

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

// Create creates segment name (prefixed) in dir, allocated at its full
// size: the log's room is taken when the segment starts, so that a node
// whose store filesystem fills up (another process's files, or its own
// objects) still appends cluster entries until the segment is full, and
// stays a working member (Sheepdog's functional test 042 fills two
// stores with dd and creates a VDI through one of them).
func (p prefixFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	return p.VFS.Create(dir, segmentPrefix+name, size)
}

// Delete deletes segment name (prefixed) in dir.
func (p prefixFS) Delete(dir, name string) error {
	return p.VFS.Delete(dir, segmentPrefix+name)
}

// OpenReader opens segment name (prefixed) in dir for reading.
func (p prefixFS) OpenReader(dir, name string) (types.ReadableFile, error) {
	return p.VFS.OpenReader(dir, segmentPrefix+name)
}

// OpenWriter opens segment name (prefixed) in dir for writing.
func (p prefixFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	return p.VFS.OpenWriter(dir, segmentPrefix+name)
}

// newWALFS returns the VFS raft's log uses: the OS's, with prefixed names.
func newWALFS() types.VFS { return prefixFS{fs.New()} }

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
