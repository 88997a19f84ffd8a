package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pkg/xattr"
)

// CopyStale copies the stale copy of oid from epoch, with its checksums,
// from src's stale area into s's, for a disk being emptied (store/md):
// recovery may still need it. It appears whole or not at all (tmp and
// rename); a copy already in s stays. The source is left as it is.
func (s *Store) CopyStale(src *Store, oid uint64, epoch uint32) error {
	if s.closed.Load() || src.closed.Load() {
		return errClosed
	}
	op := fmt.Sprintf("copy stale (epoch %d)", epoch)
	from, to := src.stalePath(oid, epoch), s.stalePath(oid, epoch)
	if _, err := os.Stat(to); err == nil {
		return nil
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return openError(op, oid, err)
	}
	sums, err := xattr.Get(from, sumAttr)
	if err != nil && !errors.Is(err, xattr.ENOATTR) {
		return ioError(op, oid, err)
	}
	tmp := filepath.Join(s.staleDir, fmt.Sprintf(".%s.%d%s", filepath.Base(to), s.tmpSeq.Add(1), tmpSuffix))
	err = os.WriteFile(tmp, data, 0o644)
	if err == nil && sums != nil {
		err = xattr.Set(tmp, sumAttr, sums)
	}
	if err == nil && !s.noSync {
		var f *os.File
		if f, err = os.Open(tmp); err == nil {
			err = f.Sync()
			f.Close()
		}
	}
	if err == nil {
		err = os.Rename(tmp, to)
	}
	if err != nil {
		os.Remove(tmp)
		return ioError(op, oid, err)
	}
	return nil
}
