package store

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// StaleObject names a superseded copy of an object kept in obj/.stale: the
// copy of Oid this node held until epoch Epoch. Recovery may read it back
// when no current copy survives.
type StaleObject struct {
	Oid   uint64
	Epoch uint32
}

// stalePath is the file of the stale copy of oid from epoch, as sheep names
// it: "%016x.%d" ("%016x_%d.%d" for a strip).
func (s *Store) stalePath(oid uint64, epoch uint32) string {
	return filepath.Join(s.staleDir, fmt.Sprintf("%s.%d", proto.ObjectName(oid), epoch))
}

// MoveToStale moves object oid out of the store into obj/.stale as the copy
// of epoch, replacing an earlier stale copy of the same oid and epoch. A
// missing object is NO_OBJ. The move is not synced: after a power cut the
// object may be back in obj/, which recovery handles like any other copy.
func (s *Store) MoveToStale(oid uint64, epoch uint32) error {
	if s.closed.Load() {
		return errClosed
	}
	mu := s.pathLock(oid)
	mu.Lock()
	err := os.Rename(s.objPath(oid), s.stalePath(oid, epoch))
	s.files.invalidate(oid)
	s.dirty.remove(oid) // superseded: see flush.go
	s.unflushed.remove(oid)
	mu.Unlock()
	if err != nil {
		return openError("move to stale", oid, err)
	}
	return nil
}

// ListStale returns the stale copies, sorted by oid and then epoch. Names in
// .stale that are not "<16 hex digits>.<epoch>" are ignored.
func (s *Store) ListStale() ([]StaleObject, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	names, err := readDirNames(s.staleDir)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w: %w", s.staleDir, proto.ResEIO, err)
	}
	objs := make([]StaleObject, 0, len(names))
	for _, name := range names {
		if o, ok := parseStaleName(name); ok {
			objs = append(objs, o)
		}
	}
	slices.SortFunc(objs, func(a, b StaleObject) int {
		return cmp.Or(cmp.Compare(a.Oid, b.Oid), cmp.Compare(a.Epoch, b.Epoch))
	})
	return objs, nil
}

func parseStaleName(name string) (StaleObject, bool) {
	hex, dec, ok := strings.Cut(name, ".")
	if !ok {
		return StaleObject{}, false
	}
	oid, ok := parseOid(hex)
	if !ok {
		return StaleObject{}, false
	}
	epoch, err := strconv.ParseUint(dec, 10, 32)
	if err != nil || strconv.FormatUint(epoch, 10) != dec { // one spelling per epoch
		return StaleObject{}, false
	}
	return StaleObject{Oid: oid, Epoch: uint32(epoch)}, true
}

// ReadStale returns the whole stale copy of oid from epoch, verified
// against its checksums; a missing copy is NO_OBJ, a bad one ErrChecksum
// (EIO).
func (s *Store) ReadStale(oid uint64, epoch uint32) ([]byte, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	op := fmt.Sprintf("read stale (epoch %d)", epoch)
	path := s.stalePath(oid, epoch)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, openError(op, oid, err)
	}
	if err := s.verifyFile(op, oid, path, data); err != nil {
		return nil, err
	}
	return data, nil
}

// PurgeStale deletes the stale copies from epochs up to and including
// maxEpoch, typically once recovery to a later epoch has finished. It goes
// on past failures and returns the first.
func (s *Store) PurgeStale(maxEpoch uint32) error {
	objs, err := s.ListStale()
	if err != nil {
		return err
	}
	var first error
	for _, o := range objs {
		if o.Epoch > maxEpoch {
			continue
		}
		err := os.Remove(s.stalePath(o.Oid, o.Epoch))
		if err != nil && !isNotExist(err) && first == nil {
			first = ioError(fmt.Sprintf("purge stale (epoch %d)", o.Epoch), o.Oid, err)
		}
	}
	return first
}
