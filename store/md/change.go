package md

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// DiskInfo is one disk as MD_INFO reports it.
type DiskInfo struct {
	Index int    // position in path order
	Path  string // the object directory
	Free  uint64 // bytes available on its filesystem
	Used  uint64 // bytes its objects and stale copies take
}

// Info lists the disks on the ring, in path order (Sheepdog's). A disk
// whose filesystem cannot be asked reports zeros.
func (s *Store) Info() []DiskInfo {
	l := s.lay.Load()
	out := make([]DiskInfo, len(l.disks))
	for i, d := range l.disks {
		out[i] = DiskInfo{Index: i, Path: d.path}
		if _, free, err := d.st.Capacity(); err == nil {
			out[i].Free = free
		}
		if used, err := d.st.Used(); err == nil {
			out[i].Used = used
		}
	}
	return out
}

// unpluggedFile, in MetaDir, lists the disks unplugged or failed while
// the node ran, one path a line: a start that finds one of them on its
// command line purges it before use, since what it holds may be
// outdated. The list is rewritten at every start and change.
const unpluggedFile = "md_unplugged"

// unplugged reads the list of unpluggedFile.
func (s *Store) unplugged() map[string]bool {
	b, _ := os.ReadFile(filepath.Join(s.cfg.MetaDir, unpluggedFile))
	out := map[string]bool{}
	for _, p := range strings.Split(string(b), "\n") {
		if p != "" {
			out[p] = true
		}
	}
	return out
}

// setUnplugged adds the paths of add to the list and drops those of the
// disks on the ring. admin is held, or Open runs.
func (s *Store) setUnplugged(add ...string) {
	cur := s.unplugged()
	for _, p := range add {
		cur[p] = true
	}
	if l := s.lay.Load(); l != nil {
		for _, d := range l.disks {
			delete(cur, d.path)
		}
	}
	var b strings.Builder
	for p := range cur {
		b.WriteString(p + "\n")
	}
	path := filepath.Join(s.cfg.MetaDir, unpluggedFile)
	if b.Len() == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("md: cannot clear the unplugged disks' list", "err", err)
		}
		return
	}
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, []byte(b.String()), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		s.log.Warn("md: cannot record the unplugged disks", "err", err)
	}
}

// errNoChange is what Plug and Unplug return when no disk changed
// (Sheepdog answers UNKNOWN); the log says why.
var errNoChange = fmt.Errorf("md: no disk plugged or unplugged: %w", proto.ResUnknown)

// SplitPaths splits MD_PLUG's and MD_UNPLUG's payload: paths separated
// by commas, NUL-terminated.
func SplitPaths(payload []byte) []string {
	v, _, _ := strings.Cut(string(payload), "\x00")
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// cleanPath is the form disks are known by.
func cleanPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return filepath.Clean(abs)
	}
	return filepath.Clean(p)
}

// Plug adds the disks at paths, purging what they hold first (their
// objects may be outdated, as in Sheepdog), and moves to them, in the
// background, the objects the ring now places there. A path already
// plugged, or that cannot be opened, is skipped (logged); none plugged is
// UNKNOWN.
func (s *Store) Plug(paths []string) error {
	if s.closed.Load() {
		return fmt.Errorf("md: closed: %w", proto.ResShutdown)
	}
	s.admin.Lock()
	defer s.admin.Unlock()
	l := s.lay.Load()
	var added []*disk
	for _, p := range paths {
		cp := cleanPath(p)
		known := func(d *disk) bool { return d.path == cp }
		if slices.ContainsFunc(l.disks, known) || slices.ContainsFunc(l.draining, known) || slices.ContainsFunc(added, known) {
			s.log.Warn("md: plug: already plugged (or still being unplugged)", "path", cp)
			continue
		}
		d, err := s.openDisk(cp, true)
		if err != nil {
			s.log.Error("md: plug", "path", cp, "err", err)
			continue
		}
		added = append(added, d)
	}
	if len(added) == 0 {
		return errNoChange
	}
	nl := &layout{disks: append(slices.Clip(l.disks), added...), draining: l.draining}
	nl.sort()
	s.lay.Store(nl)
	s.setUnplugged()
	for _, d := range added {
		s.log.Info("md: disk plugged; moving the objects it now holds", "path", d.path, "space", d.space, "vdisks", Vdisks(d.space), "disks", len(nl.disks))
	}
	s.kickMigrator()
	return nil
}

// Unplug takes the disks at paths off the ring and moves their objects,
// in the background, to the disks that now hold them; those that cannot
// be read are left to recovery (from the other nodes' copies), which
// runs once the move is over. Paths not plugged are skipped (logged);
// none unplugged is UNKNOWN, and so is unplugging every disk.
func (s *Store) Unplug(paths []string) error {
	if s.closed.Load() {
		return fmt.Errorf("md: closed: %w", proto.ResShutdown)
	}
	s.admin.Lock()
	defer s.admin.Unlock()
	l := s.lay.Load()
	var out []*disk
	for _, p := range paths {
		cp := cleanPath(p)
		i := slices.IndexFunc(l.disks, func(d *disk) bool { return d.path == cp })
		if i < 0 {
			s.log.Warn("md: unplug: not plugged", "path", cp)
			continue
		}
		if !slices.Contains(out, l.disks[i]) {
			out = append(out, l.disks[i])
		}
	}
	if len(out) == 0 {
		return errNoChange
	}
	if len(out) == len(l.disks) {
		s.log.Error("md: unplug: refusing to unplug every disk of the node", "paths", paths)
		return errNoChange
	}
	nl := &layout{draining: append(slices.Clip(l.draining), out...)}
	for _, d := range l.disks {
		if !slices.Contains(out, d) {
			nl.disks = append(nl.disks, d)
		}
	}
	nl.sort()
	s.lay.Store(nl)
	for _, d := range out {
		s.setUnplugged(d.path)
	}
	for _, d := range out {
		s.log.Info("md: disk unplugged; moving its objects to the other disks", "path", d.path, "disks", len(nl.disks))
	}
	s.kickMigrator()
	return nil
}

// fail takes d, which failed I/O with cause, out of the layout at once
// (its objects are then missing here, and recovery fetches them from the
// other nodes), and reports whether a call that failed on it should run
// again. The last disk is never taken out: the node's own store check
// takes the node out of the cluster instead.
func (s *Store) fail(d *disk, cause error) bool {
	s.admin.Lock()
	l := s.lay.Load()
	if !l.member(d) {
		s.admin.Unlock()
		return true // taken out already
	}
	if slices.Contains(l.disks, d) && len(l.disks) == 1 {
		s.admin.Unlock()
		if s.lastFailed.CompareAndSwap(false, true) {
			s.log.Error("md: the last disk failed I/O", "path", d.path, "err", cause)
			if f := s.onLastFailed.Load(); f != nil && *f != nil {
				go (*f)(cause)
			}
		}
		return false
	}
	nl := &layout{settled: l.settled}
	for _, o := range l.disks {
		if o != d {
			nl.disks = append(nl.disks, o)
		}
	}
	for _, o := range l.draining {
		if o != d {
			nl.draining = append(nl.draining, o)
		}
	}
	nl.sort()
	s.lay.Store(nl)
	s.failures.Add(1)
	s.setUnplugged(d.path)
	s.admin.Unlock()
	s.log.Error("md: disk failed I/O: unplugged; its objects are recovered from the other copies", "path", d.path, "err", cause, "disks", len(nl.disks))
	d.close() // calls still running finish; the disk's files are let go
	s.changed()
	return true
}

// Disks is the number of disks on the ring.
func (s *Store) Disks() int { return len(s.lay.Load().disks) }

// Failures is the number of disks taken out because their I/O failed.
func (s *Store) Failures() uint64 { return s.failures.Load() }

// SetOnLastFailed installs what runs (in its own goroutine, once) when
// the node's last disk fails I/O: the node leaves its cluster, so that
// its objects are recovered on the others.
func (s *Store) SetOnLastFailed(f func(error)) { s.onLastFailed.Store(&f) }

// probeName is the file CheckDisks writes on each disk.
const probeName = ".md-probe"

// syncEvery is how many calls of CheckDisks go by between two that also
// sync the probe file: an fsync of a new file commits the filesystem's
// journal, which waits for the data of everything written since the last
// commit, so a sync every 500 ms on each sheep stalled all writes on the
// host. A removed, read-only or immutable disk fails the create, which
// every call does; the sync only adds a disk failing writeback with EIO.
const syncEvery = 20

// CheckDisks writes and removes a small file on every disk (and, every
// syncEvery calls, syncs it) and unplugs those where that fails with EIO
// or EROFS, or whose directory is gone (fail), so that a disk that died
// while idle is found before a client's request meets it. A full disk is
// not a failed one, and neither is a process out of file descriptors.
func (s *Store) CheckDisks() {
	sync := (s.checks.Add(1)-1)%syncEvery == 0
	for _, d := range s.lay.Load().disks {
		err := probe(d.path, sync)
		if isDiskFault(err) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) ||
			errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.ENOTCONN) {
			s.fail(d, err)
		}
	}
}

func probe(dir string, sync bool) error {
	p := filepath.Join(dir, probeName)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return notFull(err)
	}
	_, werr := f.Write([]byte{1})
	var serr error
	if sync {
		serr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(p)
	return notFull(errors.Join(werr, serr, cerr, rerr))
}

func notFull(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return nil
	}
	return err
}

// Watch runs CheckDisks every interval until ctx ends.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		s.CheckDisks()
	}
}
