package vdi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// Service runs VDI operations for one sheep.
type Service struct {
	objects Objects
	cluster cluster.Driver
	log     *slog.Logger
	now     func() time.Time

	// mu serialises this node's create/delete so that two local requests
	// don't pick the same free slot; requests from other nodes that race
	// are caught by the state machine (KindAddVdi answers VDI_EXIST for a
	// taken vid) and retried.
	mu sync.Mutex
	// tables serialise, per inode (striped by vid), the read-write-read
	// of a write into its data_vdi_id table (WriteTable).
	tables [tableLocks]sync.Mutex
}

// New returns a VDI service.
func New(objects Objects, cl cluster.Driver, log *slog.Logger) *Service {
	return &Service{objects: objects, cluster: cl, log: log, now: time.Now}
}

// Info is what GET_VDI_INFO, LOCK_VDI and NEW_VDI answer.
type Info struct {
	Vid            uint32
	Copies         uint8
	BlockSizeShift uint8
}

func (s *Service) info(vid uint32) Info {
	i := Info{Vid: vid}
	s.cluster.View(func(st *cluster.State) {
		i.Copies = st.Copies(vid)
		i.BlockSizeShift = st.BlockShift(vid)
	})
	return i
}

// Lookup resolves a name, with an optional tag or snapshot id, to its vid.
func (s *Service) Lookup(ctx context.Context, name, tag string, snapid uint32) (Info, error) {
	r, err := s.lookup(ctx, name, tag, snapid)
	if err != nil {
		return Info{}, err
	}
	return s.info(r.vid), nil
}

// NewParams are NEW_VDI's arguments.
type NewParams struct {
	Name           string
	Size           uint64
	BaseVid        uint32
	Copies         uint8
	CopyPolicy     uint8
	StorePolicy    uint8
	BlockSizeShift uint8
	SnapID         uint32 // nonzero: snapshot the working VDI of Name
}

// New creates a VDI, a clone (BaseVid set) or a snapshot (SnapID set).
func (s *Service) New(ctx context.Context, p NewParams) (Info, error) {
	if p.Name == "" || len(p.Name) >= proto.MaxVdiLen {
		return Info{}, fmt.Errorf("bad VDI name %q: %w", p.Name, proto.ResInvalidParms)
	}
	if p.SnapID == 0 && !printable(p.Name) {
		// Existing names are looked up as they are; a new one must not
		// carry what breaks listings and terminals.
		return Info{}, fmt.Errorf("VDI name %q is not UTF-8 or has control characters: %w", p.Name, proto.ResInvalidParms)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		info, err := s.newOnce(ctx, p)
		if errors.Is(err, errRetry) && attempt < 16 {
			continue // another node took the slot; probe again
		}
		return info, err
	}
}

var errRetry = errors.New("vid taken concurrently")

// printable reports whether name is UTF-8 without control characters.
func printable(name string) bool {
	if !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (s *Service) defaults(p *NewParams) {
	s.cluster.View(func(st *cluster.State) {
		if p.Copies == 0 {
			p.Copies, p.CopyPolicy = st.NrCopies, st.CopyPolicy
		}
		if p.BlockSizeShift == 0 {
			p.BlockSizeShift = st.BlockSizeShift
		}
	})
	if p.BlockSizeShift == 0 {
		p.BlockSizeShift = proto.DefaultBlockSizeShift
	}
}

func (s *Service) newOnce(ctx context.Context, p NewParams) (Info, error) {
	s.defaults(&p)
	// Erasure coding (copy_policy != 0, QEMU's redundancy=D:P): the
	// inode's nr_copies is d+p.
	if pol := erasure.Policy(p.CopyPolicy); pol.Erasure() {
		if !pol.Valid() {
			return Info{}, fmt.Errorf("copy policy %#x is no erasure code: %w", p.CopyPolicy, proto.ResInvalidParms)
		}
		p.Copies = uint8(pol.Total())
	}
	if p.Copies > proto.MaxCopies {
		return Info{}, fmt.Errorf("%d copies over %d: %w", p.Copies, proto.MaxCopies, proto.ResInvalidParms)
	}
	if p.BlockSizeShift < proto.MinBlockSizeShift || p.BlockSizeShift > proto.MaxBlockSizeShift {
		return Info{}, fmt.Errorf("block size shift %d: %w", p.BlockSizeShift, proto.ResInvalidParms)
	}
	if p.StorePolicy == 0 && p.Size > proto.OldMaxVdiSize(p.BlockSizeShift) {
		return Info{}, fmt.Errorf("size %d over %d: %w", p.Size, proto.OldMaxVdiSize(p.BlockSizeShift), proto.ResInvalidParms)
	}
	if p.StorePolicy > 1 || (p.StorePolicy == 1 && p.Size > uint64(1)<<p.BlockSizeShift<<32) {
		return Info{}, fmt.Errorf("store policy %d of %d bytes: %w", p.StorePolicy, p.Size, proto.ResInvalidParms)
	}
	r, err := s.lookupForCreate(ctx, p.Name)
	found := err == nil
	if err != nil && !errors.Is(err, proto.ResNoVdi) {
		return Info{}, err
	}
	now := proto.SheepTime(s.now())
	ino := proto.Inode{
		Name: p.Name, CreateTime: now, VdiSize: p.Size, CopyPolicy: p.CopyPolicy,
		StorePolicy: p.StorePolicy, NrCopies: p.Copies, BlockSizeShift: p.BlockSizeShift,
		VdiID: r.free, SnapID: 1, ParentVdiID: p.BaseVid,
	}
	entry := &cluster.Entry{Kind: cluster.KindAddVdi, Vid: r.free, Copies: p.Copies,
		CopyPolicy: p.CopyPolicy, BlockSizeShift: p.BlockSizeShift, ParentVid: p.BaseVid}

	var table []uint32   // data_vdi_id of the new inode
	var shareFrom uint32 // the inode table is copied from: its grefs count the copy
	var oldVid uint32
	// restore: the working VDI the entry makes a snapshot (a snapshot's
	// old vid, a clone's base that was not one yet); a failed create
	// makes it a working VDI again.
	var restore uint32
	switch {
	case p.SnapID != 0:
		// Snapshot: the working inode keeps its vid and becomes the
		// snapshot; a new vid becomes the working VDI, sharing its
		// objects. Rebase (a base other than the working VDI, as dog's
		// restore and QEMU's "goto snapshot" send): the working VDI
		// still becomes a snapshot, but the new working VDI starts from
		// the base's objects, with the base as parent.
		if !found {
			return Info{}, fmt.Errorf("snapshot of %q: %w", p.Name, proto.ResNoVdi)
		}
		old, err := s.readInode(ctx, r.vid)
		if err != nil {
			return Info{}, err
		}
		src := old
		if p.BaseVid != 0 && p.BaseVid != r.vid {
			if src, err = s.readInode(ctx, p.BaseVid); err != nil {
				return Info{}, fmt.Errorf("rebase %q onto %x: %v: %w", p.Name, p.BaseVid, err, proto.ResBaseVdiRead)
			}
		}
		if old.StorePolicy != 0 || src.StorePolicy != 0 {
			// As dog: "creating a snapshot of hypervolume is not supported".
			return Info{}, fmt.Errorf("snapshot of hyper volume %q: %w", p.Name, proto.ResInvalidParms)
		}
		oldVid = r.vid
		table = src.DataVdiID
		shareFrom = r.vid
		if src != old {
			shareFrom = p.BaseVid
		}
		ino.VdiSize = src.VdiSize
		if src != old && p.Size != 0 {
			ino.VdiSize = p.Size
		}
		ino.NrCopies, ino.CopyPolicy, ino.BlockSizeShift, ino.StorePolicy = old.NrCopies, old.CopyPolicy, old.BlockSizeShift, old.StorePolicy
		entry.Copies, entry.CopyPolicy, entry.BlockSizeShift = old.NrCopies, old.CopyPolicy, old.BlockSizeShift
		ino.SnapID = old.SnapID + 1
		ino.ParentVdiID = src.VdiID
		entry.ParentVid = src.VdiID
		entry.OldVid, entry.SnapshotOld = r.vid, true
		restore = r.vid
	default:
		if found {
			return Info{}, fmt.Errorf("%q: %w", p.Name, proto.ResVdiExist)
		}
		if r.vid != 0 && p.BaseVid == 0 && s.recycling() {
			// The working VDI of the name was deleted but snapshots
			// remain: with -R, Sheepdog keeps their family's inodes
			// and answers VDI_EXIST (its vdi_lookup; test 106).
			return Info{}, fmt.Errorf("%q has snapshots left: %w", p.Name, proto.ResVdiExist)
		}
		if r.nextSnap != 0 {
			ino.SnapID = r.nextSnap
			entry.OldVid = r.vid
		}
		if p.BaseVid != 0 {
			// A clone shares the base's objects, so the base must be a
			// live VDI, and it becomes a snapshot (its objects read-only)
			// if it was not one already, as NOTIFY_VDI_ADD does with
			// old = base.
			live := false
			s.cluster.View(func(st *cluster.State) {
				v := st.VdiState(p.BaseVid)
				live = v != nil && !v.Deleted
			})
			baseSnapshot := false
			s.cluster.View(func(st *cluster.State) {
				if v := st.VdiState(p.BaseVid); v != nil {
					baseSnapshot = v.Snapshot
				}
			})
			if !baseSnapshot {
				restore = p.BaseVid
			}
			base, err := s.readInode(ctx, p.BaseVid)
			if err != nil || !live {
				return Info{}, fmt.Errorf("base %x: %w", p.BaseVid, proto.ResNoBaseVdi)
			}
			if base.StorePolicy != 0 {
				return Info{}, fmt.Errorf("clone of hyper volume %x: %w", p.BaseVid, proto.ResInvalidParms)
			}
			table = base.DataVdiID
			shareFrom = p.BaseVid
			if p.Size == 0 {
				ino.VdiSize = base.VdiSize
			}
			entry.OldVid, entry.SnapshotOld = p.BaseVid, true
		} else if p.StorePolicy == 1 {
			// A hyper volume starts with an empty depth-1 B-tree, as
			// Sheepdog's sheep writes it (dog aborts on depth 0).
			table = make([]uint32, proto.MaxDataIndexes)
			root := proto.NewBtreeRoot()
			table[0], table[1] = le.Uint32(root), le.Uint32(root[4:])
		}
	}
	res, err := s.cluster.Propose(ctx, entry)
	if err != nil {
		return Info{}, err
	}
	if res == proto.ResVdiExist {
		return Info{}, errRetry
	}
	if res != proto.ResSuccess {
		return Info{}, fmt.Errorf("register vid %x: %w", r.free, res)
	}
	if oldVid != 0 {
		// Mark the old inode a snapshot (snap_ctime) only once the new vid
		// is ours: marked earlier, a refused proposal would leave a retry's
		// lookup seeing a snapshot and no working VDI (NO_VDI). Data
		// writes to the old vid are already refused: the entry made its
		// vdi_state a snapshot.
		var sc [8]byte
		le64(sc[:], now)
		if err := s.objects.WriteObject(ctx, proto.VidToVdiOid(oldVid), 520, sc[:], 0); err != nil {
			return Info{}, fmt.Errorf("mark %x snapshot: %w", oldVid, err)
		}
	}
	ino.DataVdiID = table
	if err := s.writeCopy(ctx, &ino, shareFrom); err != nil {
		// All or nothing: a vid without an inode would trip up every
		// listing. Give the vid up (deleted, as if created and deleted);
		// the client's ctx may be what failed, so this gets its own.
		// As Sheepdog's create_vdi, any failure to write it is VDI_WRITE
		// (a cluster of gateways only, say, where there is no copy).
		if oldVid != 0 {
			// Unmark the old inode first: an overwrite in place, which
			// a full store still takes.
			var zero [8]byte
			if uerr := s.objects.WriteObject(context.WithoutCancel(ctx), proto.VidToVdiOid(oldVid), 520, zero[:], 0); uerr != nil {
				s.log.Error("failed snapshot: the old inode keeps its snapshot mark", "vid", fmt.Sprintf("%x", oldVid), "err", uerr)
			}
		}
		s.abandon(r.free, restore, err)
		return Info{}, fmt.Errorf("%w: %w", proto.ResVdiWrite, err)
	}
	var gone bool
	s.cluster.View(func(st *cluster.State) { gone = st.IsDeleted(r.free) })
	if gone {
		// A create of the same name elsewhere gave up waiting for this
		// inode and cleaned the vid (lookupForCreate).
		return Info{}, fmt.Errorf("vid %x was given up while its inode was written: %w", r.free, proto.ResVdiExist)
	}
	s.log.Info("vdi created", "name", p.Name, "vid", fmt.Sprintf("%x", r.free), "snapshot_of", fmt.Sprintf("%x", oldVid), "base", fmt.Sprintf("%x", p.BaseVid))
	return s.info(r.free), nil
}

var le = binary.LittleEndian

// recycling reports whether the cluster was formatted with -R.
func (s *Service) recycling() bool {
	var on bool
	s.cluster.View(func(st *cluster.State) { on = st.Flags&proto.ClusterFlagRecycleVid != 0 })
	return on
}

// recycle frees the vids of vid's family when the cluster was formatted
// with -R and every member is deleted (Sheepdog's run_vid_gc): their
// inode objects are removed, then KindRecycle clears their bits. A crash
// in between leaves the vids taken, never a new VDI beside an old inode.
func (s *Service) recycle(ctx context.Context, vid uint32) error {
	var family []uint32
	s.cluster.View(func(st *cluster.State) {
		if st.Recyclable(vid) {
			family = st.Family(vid)
		}
	})
	if len(family) == 0 {
		return nil
	}
	for _, v := range family {
		if err := s.objects.RemoveObject(ctx, proto.VidToVdiOid(v)); err != nil && !errors.Is(err, proto.ResNoObj) {
			return err
		}
	}
	res, err := s.cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecycle, Vid: vid})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return fmt.Errorf("recycle family of %x: %w", vid, res)
	}
	s.log.Info("all members of the family are deleted: vids recycled", "vids", fmt.Sprintf("%x", family))
	return nil
}

// removeHyper removes the data objects of hyper volume vid, whose inode as
// read before the delete is ino, and the leaf objects of its index.
func (s *Service) removeHyper(ctx context.Context, vid uint32, ino *proto.Inode) error {
	root := make([]byte, proto.BtreeNodeSize)
	for i := range proto.BtreeNodeSize / 4 {
		le.PutUint32(root[4*i:], ino.DataVdiID[i])
	}
	tree, err := proto.DecodeBtree(vid, ino.BtreeCounter, root, func(oid uint64) ([]byte, error) {
		b := make([]byte, proto.BtreeNodeSize)
		return b, s.objects.ReadObject(ctx, oid, 0, b)
	})
	if err != nil {
		return err
	}
	var oids []uint64
	tree.Walk(func(idx, owner uint32) {
		if owner == vid {
			oids = append(oids, proto.VidToDataOid(vid, idx))
		}
	})
	oids = append(oids, tree.Nodes()...)
	return fanout.Run(len(oids), 16, func(i int) error {
		if err := s.objects.RemoveObject(ctx, oids[i]); err != nil && !errors.Is(err, proto.ResNoObj) {
			return err
		}
		return nil
	})
}

func le64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// writeNewInode creates the inode object: header plus the used part of
// data_vdi_id (the rest of the sparse object reads as zeros).
// abandon marks vid, registered for a create whose inode could not be
// written, deleted, so that listings and checks skip it and a retry
// creates the name anew. restore, if not 0, is the VDI the create made a
// snapshot: it is a working VDI again (a failed snapshot or clone leaves
// things as they were).
func (s *Service) abandon(vid, restore uint32, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e := &cluster.Entry{Kind: cluster.KindDelVdi, Vid: vid}
	if restore != 0 {
		e.OldVid, e.SnapshotOld = restore, true
	}
	res, err := s.cluster.Propose(ctx, e)
	if err != nil || res != proto.ResSuccess {
		s.log.Error("failed create: giving up its vid failed; a retry of the create cleans it", "vid", fmt.Sprintf("%x", vid), "cause", cause, "result", res, "err", err)
		return
	}
	s.log.Warn("failed create: vid given up", "vid", fmt.Sprintf("%x", vid), "cause", cause)
}

func (s *Service) writeNewInode(ctx context.Context, ino *proto.Inode) error {
	n := int64(proto.InodeHeaderSize)
	if last := lastNonZero(ino.DataVdiID); last >= 0 {
		n = int64(proto.DataVdiIDOff(uint32(last))) + 4
	}
	buf := make([]byte, n)
	if err := ino.MarshalRange(0, buf); err != nil {
		return err
	}
	if err := s.objects.CreateAndWrite(ctx, proto.VidToVdiOid(ino.VdiID), 0, 0, buf, 0); err != nil {
		return fmt.Errorf("write inode %x: %w", ino.VdiID, err)
	}
	if last := lastNonZeroGref(ino.Gref); last >= 0 {
		if err := s.objects.WriteObject(ctx, proto.VidToVdiOid(ino.VdiID), proto.GrefOffset, proto.EncodeGrefs(ino.Gref[:last+1]), 0); err != nil {
			return fmt.Errorf("write grefs of inode %x: %w", ino.VdiID, err)
		}
	}
	return nil
}

// writeCopy writes the new inode ino, whose table was copied from inode
// base (0: none), once base's grefs count the copy (shareRefs).
func (s *Service) writeCopy(ctx context.Context, ino *proto.Inode, base uint32) error {
	if base != 0 {
		g, err := s.shareRefs(ctx, base, ino.DataVdiID)
		if err != nil {
			return err
		}
		ino.Gref = g
	}
	return s.writeNewInode(ctx, ino)
}

func lastNonZeroGref(g []proto.Gref) int {
	for i := len(g) - 1; i >= 0; i-- {
		if g[i] != (proto.Gref{}) {
			return i
		}
	}
	return -1
}

func lastNonZero(t []uint32) int {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] != 0 {
			return i
		}
	}
	return -1
}

// readInode reads the header and data_vdi_id table of vid.
func (s *Service) readInode(ctx context.Context, vid uint32) (*proto.Inode, error) {
	buf := make([]byte, proto.GrefOffset)
	if err := s.objects.ReadObject(ctx, proto.VidToVdiOid(vid), 0, buf); err != nil {
		return nil, fmt.Errorf("read inode %x: %w", vid, err)
	}
	ino := &proto.Inode{}
	if err := ino.UnmarshalRange(0, buf); err != nil {
		return nil, err
	}
	return ino, nil
}

// Delete deletes the VDI (or the snapshot named by tag/snapid): its name is
// cleared, it is marked deleted everywhere, every data object no live VDI
// references any more is removed, and so are its vmstate objects (QEMU's
// savevm data, which belong to this vid alone). The inode object and the
// in-use bit stay, so probe chains remain intact.
func (s *Service) Delete(ctx context.Context, name, tag string, snapid uint32) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.lookup(ctx, name, tag, snapid)
	if err != nil {
		return 0, err
	}
	ino, err := s.readInode(ctx, r.vid)
	if err != nil {
		return 0, err
	}
	if last := lastNonZero(ino.DataVdiID); last >= 0 && ino.StorePolicy == 0 {
		if ino.Gref, err = s.readGrefs(ctx, r.vid, 0, uint32(last)+1); err != nil {
			s.log.Warn("delete: grefs unreadable, its references are checked by scan", "vid", fmt.Sprintf("%x", r.vid), "err", err)
		}
	}
	res, err := s.cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindDelVdi, Vid: r.vid})
	if err != nil {
		return 0, err
	}
	if res != proto.ResSuccess {
		return 0, fmt.Errorf("delete %x: %w", r.vid, res)
	}
	// Clear the name and size and zero the table: the on-disk sign of a
	// deleted inode that a restarted node or dog recognises.
	cleared := proto.Inode{CreateTime: ino.CreateTime, SnapCtime: ino.SnapCtime, NrCopies: ino.NrCopies,
		CopyPolicy: ino.CopyPolicy, BlockSizeShift: ino.BlockSizeShift, SnapID: ino.SnapID,
		VdiID: ino.VdiID, ParentVdiID: ino.ParentVdiID}
	if err := s.writeNewInode(ctx, &cleared); err != nil {
		return 0, err
	}
	if ino.StorePolicy != 0 {
		// A hyper volume's objects are its own (no snapshot or clone
		// shares them): removed with the nodes of its index.
		if err := s.removeHyper(ctx, r.vid, ino); err != nil {
			s.log.Warn("remove objects of deleted hyper volume", "vid", fmt.Sprintf("%x", r.vid), "err", err)
		}
	} else if err := s.dropTable(ctx, r.vid, ino); err != nil {
		s.log.Warn("drop references after delete", "vid", fmt.Sprintf("%x", r.vid), "err", err)
	}
	if err := s.removeVMState(ctx, r.vid, ino); err != nil {
		s.log.Warn("remove vmstate after delete", "vid", fmt.Sprintf("%x", r.vid), "err", err)
	}
	if err := s.recycle(ctx, r.vid); err != nil {
		s.log.Warn("recycle vids after delete", "vid", fmt.Sprintf("%x", r.vid), "err", err)
	}
	s.log.Info("vdi deleted", "name", name, "vid", fmt.Sprintf("%x", r.vid))
	return r.vid, nil
}

// dropTable drops every reference still in the table of ino, the inode
// of vid just deleted, with the grefs read before (ino.Gref; entries past
// its end are unknown). dog zeroes a table before DEL_VDI, so this is for
// other clients.
func (s *Service) dropTable(ctx context.Context, vid uint32, ino *proto.Inode) error {
	last := lastNonZero(ino.DataVdiID)
	if last < 0 {
		return nil
	}
	var drops []drop
	for i, v := range ino.DataVdiID[:last+1] {
		if v == 0 {
			continue
		}
		g := proto.Gref{Generation: -1} // unknown: dropFor sends it to the scan
		if i < len(ino.Gref) {
			g = ino.Gref[i]
		}
		drops = append(drops, drop{Ref: Ref{Vid: v, Index: uint32(i)}, gref: g})
	}
	return s.dropRefs(ctx, vid, ino.IsSnapshot(), drops)
}

// Lock locks vid for owner when the cluster uses locks; otherwise it only
// checks that the VDI exists, as Sheepdog does.
func (s *Service) Lock(ctx context.Context, vid uint32, owner proto.NodeID) error {
	useLock := false
	s.cluster.View(func(st *cluster.State) { useLock = st.Flags&proto.ClusterFlagUseLock != 0 })
	if !useLock {
		return nil
	}
	// The token tells a retry of this proposal from a second lock.
	res, err := s.cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindLock, Vid: vid, Owner: owner, Token: rand.Uint64() | 1})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return fmt.Errorf("lock %x: %w", vid, res)
	}
	return nil
}

// Release unlocks vid.
func (s *Service) Release(ctx context.Context, vid uint32) error {
	useLock := false
	s.cluster.View(func(st *cluster.State) { useLock = st.Flags&proto.ClusterFlagUseLock != 0 })
	if !useLock {
		return nil
	}
	res, err := s.cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindRelease, Vid: vid})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess && res != proto.ResVdiNotLocked {
		return fmt.Errorf("release %x: %w", vid, res)
	}
	return nil
}
