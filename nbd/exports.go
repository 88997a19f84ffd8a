package nbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// errNoExport is wrapped by resolve when no reading of the name exists.
var errNoExport = errors.New("no such export")

// resolve finds the VDI an export name stands for: the first of its
// readings (proto.VdiRefReadings: NAME, NAME:SNAPID, NAME:TAG) that exists.
func (s *Server) resolve(ctx context.Context, export string) (proto.VdiRef, uint32, error) {
	if export == "" {
		return proto.VdiRef{}, 0, fmt.Errorf("%w: there is no default export; name a VDI (NBD_OPT_LIST lists them)", errNoExport)
	}
	if len(export) > maxString {
		return proto.VdiRef{}, 0, fmt.Errorf("%w: name of %d bytes", errNoExport, len(export))
	}
	for _, r := range proto.VdiRefReadings(export) {
		vid, err := s.cfg.Lookup(ctx, r.Name, r.Tag, r.SnapID)
		if err == nil {
			return r, vid, nil
		}
		if !errors.Is(err, proto.ResNoVdi) && !errors.Is(err, proto.ResNoTag) {
			return proto.VdiRef{}, 0, fmt.Errorf("look up %q: %w", export, err)
		}
	}
	return proto.VdiRef{}, 0, fmt.Errorf("%w: %q is neither a VDI nor NAME:SNAPID or NAME:TAG of a snapshot", errNoExport, export)
}

// Export is one entry of NBD_OPT_LIST.
type Export struct {
	Name        string // what a client passes to NBD_OPT_GO
	Description string
}

// describe is the human-readable description of an inode's exports.
func describe(ino *proto.Inode) string {
	size := fmt.Sprintf("%d bytes", ino.VdiSize)
	switch {
	case !ino.IsSnapshot():
		return "VDI " + ino.Name + ", " + size
	case ino.Tag != "":
		return fmt.Sprintf("snapshot %d (tag %s) of %s, %s, read-only", ino.SnapID, ino.Tag, ino.Name, size)
	}
	return fmt.Sprintf("snapshot %d of %s, %s, read-only", ino.SnapID, ino.Name, size)
}

// exportsOf returns the export names of one inode: the VDI's name when it
// is a working VDI, NAME:SNAPID and (when tagged) NAME:TAG for a snapshot.
func exportsOf(ino *proto.Inode) []Export {
	desc := describe(ino)
	if !ino.IsSnapshot() {
		return []Export{{Name: ino.Name, Description: desc}}
	}
	e := []Export{{Name: proto.VdiRef{Name: ino.Name, SnapID: ino.SnapID}.String(), Description: desc}}
	if ino.Tag != "" {
		e = append(e, Export{Name: proto.VdiRef{Name: ino.Name, Tag: ino.Tag}.String(), Description: desc})
	}
	return e
}

// List returns every export: each live VDI's inode header is read through
// the object layer. Inodes that are gone or nameless (deleted) are skipped.
func (s *Server) List(ctx context.Context) ([]Export, error) {
	var out []Export
	buf := make([]byte, proto.InodeHeaderSize)
	for _, vid := range s.cfg.Vids() {
		if err := s.cfg.Objects.ReadObject(ctx, proto.VidToVdiOid(vid), 0, buf); err != nil {
			if errors.Is(err, proto.ResNoObj) {
				continue
			}
			return nil, fmt.Errorf("read inode %x: %w", vid, err)
		}
		var ino proto.Inode
		if err := ino.UnmarshalHeader(buf); err != nil {
			return nil, err
		}
		if ino.Name == "" {
			continue
		}
		out = append(out, exportsOf(&ino)...)
	}
	slices.SortFunc(out, func(a, b Export) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// registry shares one open volume per VDI among all connections of a
// server. The volume caches the inode's data_vdi_id table; two volumes of
// one VDI would each miss the other's allocations and copy-on-write over
// data the other wrote. Invariant: at most one *volume.Volume per writable
// vid is in use by this server at any time. (A request may still finish
// on a volume that follow has just released; that volume's VDI has become
// a snapshot, whose objects the gateway no longer lets anyone write.)
//
// Writers outside this server (QEMU, collie, sheepfs through another
// volume) are not seen: as in Sheepdog, one VDI has one writer at a time.
type registry struct {
	mu   sync.Mutex
	vols map[uint32]*sharedVolume
}

// sharedVolume is one registry entry. ready is closed once vol or err is
// set; refs counts the holders (guarded by registry.mu).
type sharedVolume struct {
	vid   uint32
	ready chan struct{}
	vol   *volume.Volume
	err   error
	refs  int
	// successor is the vid of the working VDI that replaced this one
	// when it became a snapshot (0: none known). Set once; exports of the
	// working VDI's name move to it before their next request.
	successor atomic.Uint32
}

// acquire returns the shared volume of vid, opening it on first use.
func (r *registry) acquire(ctx context.Context, oio volume.ObjectIO, vid uint32) (*sharedVolume, error) {
	r.mu.Lock()
	if r.vols == nil {
		r.vols = map[uint32]*sharedVolume{}
	}
	sv, ok := r.vols[vid]
	if ok {
		sv.refs++
		r.mu.Unlock()
		select {
		case <-sv.ready:
		case <-ctx.Done():
			r.release(sv)
			return nil, ctx.Err()
		}
		if sv.err != nil {
			r.release(sv)
			return nil, sv.err
		}
		return sv, nil
	}
	sv = &sharedVolume{vid: vid, ready: make(chan struct{}), refs: 1}
	r.vols[vid] = sv
	r.mu.Unlock()

	sv.vol, sv.err = volume.Open(ctx, oio, vid, false)
	if sv.err == nil {
		// Write-back, as a disk with a write cache: a WRITE is stable
		// once FLUSHed, or at once with FUA (docs/design.md §7 "Durability").
		sv.vol.Flags |= proto.FlagCmdCache
	}
	if sv.err != nil {
		// Forget the failed entry now, so that the next acquire retries
		// instead of inheriting this error.
		r.mu.Lock()
		if r.vols[vid] == sv {
			delete(r.vols, vid)
		}
		r.mu.Unlock()
		close(sv.ready)
		return nil, sv.err
	}
	close(sv.ready)
	return sv, nil
}

// release drops one reference; the last one forgets the volume, so that
// the next connection reads the inode afresh.
func (r *registry) release(sv *sharedVolume) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sv.refs--
	if sv.refs == 0 && r.vols[sv.vid] == sv {
		delete(r.vols, sv.vid)
	}
}

// open reports how many volumes are in use (for tests).
func (r *registry) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.vols)
}

// export is the VDI one connection has open.
type export struct {
	name     string // as the client named it
	ref      proto.VdiRef
	readOnly bool
	size     int64
	objSize  int64

	// cur is the shared volume requests go to. It changes only when a
	// snapshot of the working VDI was taken (see Server.follow), under mu.
	cur atomic.Pointer[sharedVolume]
	mu  sync.Mutex
}

// openExport resolves name and takes a reference on its shared volume.
func (s *Server) openExport(ctx context.Context, name string) (*export, error) {
	ref, vid, err := s.resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	sv, err := s.vols.acquire(ctx, s.cfg.Objects, vid)
	if err != nil {
		return nil, fmt.Errorf("open %q (vdi %x): %w", name, vid, err)
	}
	e := &export{
		name: name, ref: ref, readOnly: ref.Snapshot() || sv.vol.ReadOnly(),
		size: sv.vol.Size(), objSize: sv.vol.ObjectSize(),
	}
	e.cur.Store(sv)
	return e, nil
}

// closeExport drops the connection's reference.
func (s *Server) closeExport(e *export) {
	if sv := e.cur.Swap(nil); sv != nil {
		s.vols.release(sv)
	}
}

// volume returns the volume a request of e goes to: the current one, or,
// for a working VDI that has been snapshotted meanwhile, its successor.
func (s *Server) volume(ctx context.Context, e *export) (*sharedVolume, error) {
	sv := e.cur.Load()
	if e.readOnly || sv.successor.Load() == 0 {
		return sv, nil
	}
	return s.follow(ctx, e)
}

// follow moves e along successor links to the current working VDI.
func (s *Server) follow(ctx context.Context, e *export) (*sharedVolume, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		sv := e.cur.Load()
		next := sv.successor.Load()
		if next == 0 {
			return sv, nil
		}
		nsv, err := s.vols.acquire(ctx, s.cfg.Objects, next)
		if err != nil {
			return nil, fmt.Errorf("%q moved to vdi %x: %w", e.name, next, err)
		}
		e.cur.Store(nsv)
		s.vols.release(sv)
		s.log.Info("nbd export follows its working VDI after a snapshot", "export", e.name,
			"from", fmt.Sprintf("%x", sv.vid), "to", fmt.Sprintf("%x", next))
	}
}

// reload handles a write refused with READONLY on a working VDI's export:
// a snapshot was taken, and the VDI's name now stands for a new vid (this
// is what QEMU's sheepdog driver does on SD_RES_READONLY). It records the
// successor on the old volume, for every connection, and moves e to it.
// It fails when the name still resolves to the same vid.
func (s *Server) reload(ctx context.Context, e *export, old *sharedVolume) (*sharedVolume, error) {
	// The snapshot's new working inode is written right after the vid
	// is registered; until then the name does not resolve. Retry briefly.
	var vid uint32
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		vid, err = s.cfg.Lookup(ctx, e.ref.Name, "", 0)
		if err == nil && vid != old.vid {
			break
		}
		select {
		case <-time.After(25 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	if vid == old.vid {
		return nil, fmt.Errorf("%q is still vdi %x", e.ref.Name, vid)
	}
	old.successor.CompareAndSwap(0, vid)
	return s.follow(ctx, e)
}
