// Package volume presents a VDI as a block device: ReadAt/WriteAt over any
// byte range, holes reading as zeros, copy-on-write from the objects a
// snapshot or clone shares, and the inode's data_vdi_id table kept up to
// date the way QEMU's driver and dog do (docs/protocol.md §4.5). It runs over
// any ObjectIO: core/gateway in-process, core/client over the network.
package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// ObjectIO is the object interface a volume is written against.
type ObjectIO interface {
	ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error
	WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error
	CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error
	RemoveObject(ctx context.Context, oid uint64) error
	Flush(ctx context.Context) error
}

// Puncher is implemented by an ObjectIO that can make a range of an
// object read as zeros without writing them (core/gateway punches a hole
// in every copy). The volume only punches objects its own VDI owns: a
// punch changes oid in place, for every VDI that shares it.
type Puncher interface {
	PunchObject(ctx context.Context, oid uint64, off, n int64, flags uint16) error
}

// VdiFlusher is implemented by an ObjectIO that can make one VDI's writes
// stable without waiting for every other VDI's (core/objcache pushes only
// that VDI's dirty objects). Flush uses it when it is there.
type VdiFlusher interface {
	FlushVdi(ctx context.Context, vid uint32) error
}

// ErrReadOnly is returned for writes to a snapshot volume.
var ErrReadOnly = fmt.Errorf("volume is a snapshot: %w", proto.ResReadonly)

// stripes is the number of per-index locks. Index i uses stripe i%stripes.
const stripes = 256

// TryReader is an ObjectIO that can read without waiting
// (gateway.Gateway.TryReadObject): true when buf holds the bytes, false
// when it would have had to wait.
type TryReader interface {
	TryReadObject(oid uint64, off int64, buf []byte) bool
}

// Volume is an open VDI.
type Volume struct {
	io       ObjectIO
	try      TryReader // io, when it is one
	vid      uint32
	ino      proto.Inode // header + DataVdiID
	objSize  int64
	readOnly bool
	// Flags are added to every object write (e.g. FlagCmdDirect). With
	// proto.FlagCmdCache the volume is write-back: over core/gateway, a
	// write is then stable only after the next Flush, as on a disk with
	// a write cache (the NBD front-end). Set it before sharing the volume.
	//
	// Write-back covers the allocation of fresh objects too (see
	// "Lazy allocation"): the object and its table entry are written
	// without sync, at once, and become stable at the next Flush.
	// A copy on write is created stable before its entry names it, and
	// an entry is cleared stable before its object is removed.
	Flags uint16

	// unstable holds the data indexes allocated write-back and not yet
	// flushed: a FUA write to one also makes its table entry stable.
	// The value is the allocation's number (unstableSeq), so that a
	// Flush forgets only the allocations it covered.
	unstableMu  sync.Mutex
	unstable    map[uint32]uint64
	unstableSeq uint64

	// locks guard table entries: readers and writers of an allocated
	// object hold RLock on its stripe; allocation (create/COW + table
	// update) and discard hold Lock. Invariant: ino.DataVdiID[i] only
	// changes under Lock of stripe i%stripes, after the object it names
	// was created durably, or, allocated write-back, together with its
	// creation ("Lazy allocation").
	locks [stripes]sync.RWMutex

	// tree is the index of a hyper volume (store_policy 1), in place of
	// ino.DataVdiID, which is then nil (see "Hyper volumes").
	tree   *proto.Btree
	treeMu sync.RWMutex
}

// Open reads vid's inode (header and data_vdi_id) and returns the volume.
// A snapshot is opened read-only whatever readOnly says.
func Open(ctx context.Context, oio ObjectIO, vid uint32, readOnly bool) (*Volume, error) {
	buf := make([]byte, proto.GrefOffset)
	if err := oio.ReadObject(ctx, proto.VidToVdiOid(vid), 0, buf); err != nil {
		return nil, fmt.Errorf("open vdi %x: %w", vid, err)
	}
	v := &Volume{io: oio, vid: vid}
	v.try, _ = oio.(TryReader)
	if err := v.ino.UnmarshalRange(0, buf); err != nil {
		return nil, err
	}
	if v.ino.Name == "" {
		return nil, fmt.Errorf("open vdi %x: deleted: %w", vid, proto.ResNoVdi)
	}
	v.objSize = v.ino.ObjectSize()
	v.readOnly = readOnly || v.ino.IsSnapshot()
	if v.ino.StorePolicy != 0 {
		v.ino.DataVdiID = nil
		if err := v.loadTree(ctx, buf[proto.DataVdiIDOffset:]); err != nil {
			return nil, fmt.Errorf("open vdi %x: %w", vid, err)
		}
	}
	return v, nil
}

// Hyper volumes. A VDI with store_policy 1 (`vdi create -y`, up to 16 PiB)
// indexes its objects with a B-tree in Sheepdog's layout (proto.Btree)
// instead of the flat data_vdi_id. The tree in memory is the volume's
// table: the one-writer rule makes it authoritative, so holes are not
// checked against the inode as flat tables are ("Other writers"). Every
// change of it is stored with sync, in the order proto.Btree gives (a new
// leaf before the root names it); a failed store reloads the tree from
// the inode so that memory never runs ahead of the disk. treeMu
// serialises changes of the tree, under the stripe locks.

// loadTree decodes the tree from root, the inode's data_vdi_id area.
func (v *Volume) loadTree(ctx context.Context, root []byte) error {
	t, err := proto.DecodeBtree(v.vid, v.ino.BtreeCounter, root, func(oid uint64) ([]byte, error) {
		b := make([]byte, proto.BtreeNodeSize)
		return b, v.io.ReadObject(ctx, oid, 0, b)
	})
	if err != nil {
		return fmt.Errorf("index of hyper volume: %w: %w", err, proto.ResEIO)
	}
	v.tree = t
	return nil
}

// reloadTree reads the tree again from the inode. The caller holds treeMu.
func (v *Volume) reloadTree(ctx context.Context) error {
	var hdr [proto.InodeHeaderSize]byte
	if err := v.io.ReadObject(ctx, proto.VidToVdiOid(v.vid), 0, hdr[:]); err != nil {
		return err
	}
	if err := v.ino.UnmarshalHeader(hdr[:]); err != nil {
		return err
	}
	root := make([]byte, proto.BtreeNodeSize)
	if err := v.io.ReadObject(ctx, proto.VidToVdiOid(v.vid), proto.DataVdiIDOffset, root); err != nil {
		return err
	}
	return v.loadTree(ctx, root)
}

// setTree stores data index idx naming owner in the tree. The caller
// holds the stripe's Lock.
func (v *Volume) setTree(ctx context.Context, idx, owner uint32) error {
	v.treeMu.Lock()
	defer v.treeMu.Unlock()
	writes, err := v.tree.Set(idx, owner)
	for _, w := range writes {
		if err != nil {
			break
		}
		flags := v.Flags &^ proto.FlagCmdCache
		if w.Create {
			err = v.io.CreateAndWrite(ctx, w.Oid, 0, w.Off, w.Data, flags)
		} else {
			err = v.io.WriteObject(ctx, w.Oid, w.Off, w.Data, flags)
		}
	}
	if err != nil {
		if rerr := v.reloadTree(ctx); rerr != nil {
			err = fmt.Errorf("%w (and reloading the index: %v)", err, rerr)
		}
		return fmt.Errorf("update index of hyper volume %x at %d: %w", v.vid, idx, err)
	}
	return nil
}

// entry is the cached table entry of idx. The caller holds the stripe's
// lock (either way).
func (v *Volume) entry(idx uint32) uint32 {
	if v.tree != nil {
		v.treeMu.RLock()
		defer v.treeMu.RUnlock()
		return v.tree.Get(idx)
	}
	return v.ino.DataVdiID[idx]
}

// Vid is the VDI id.
func (v *Volume) Vid() uint32 { return v.vid }

// Name is the VDI name.
func (v *Volume) Name() string { return v.ino.Name }

// Inode returns the inode header as read at open (DataVdiID excluded).
func (v *Volume) Inode() proto.Inode {
	h := v.ino
	h.DataVdiID, h.Gref = nil, nil
	return h
}

// Size is the VDI size in bytes.
func (v *Volume) Size() int64 { return int64(v.ino.VdiSize) }

// ObjectSize is the size of one data object.
func (v *Volume) ObjectSize() int64 { return v.objSize }

// ReadOnly reports whether writes are refused.
func (v *Volume) ReadOnly() bool { return v.readOnly }

// Owner returns the vid whose object backs data index idx (0: a hole).
func (v *Volume) Owner(idx uint32) uint32 {
	l := &v.locks[idx%stripes]
	l.RLock()
	defer l.RUnlock()
	return v.entry(idx)
}

// chunk is the part of a request that falls into one object.
type chunk struct {
	idx uint32
	off int64 // offset inside the object
	buf []byte
}

// split cuts [off, off+len(p)) at object boundaries.
func (v *Volume) split(p []byte, off int64) []chunk {
	var cs []chunk
	for len(p) > 0 {
		idx := off / v.objSize
		o := off % v.objSize
		n := min(int64(len(p)), v.objSize-o)
		cs = append(cs, chunk{idx: uint32(idx), off: o, buf: p[:n]})
		p, off = p[n:], off+n
	}
	return cs
}

// within returns [off, off+len(p)) as one chunk when it falls inside one
// object, as most requests do: they then run on the caller's goroutine
// with no slice or closure allocated (split and each).
func (v *Volume) within(p []byte, off int64) (chunk, bool) {
	o := off % v.objSize
	if len(p) == 0 || o+int64(len(p)) > v.objSize {
		return chunk{}, false
	}
	return chunk{idx: uint32(off / v.objSize), off: o, buf: p}, true
}

// each runs f on every chunk, concurrently when there are several (the
// object layer pipelines them), and returns the first error.
func each(cs []chunk, f func(c chunk) error) error {
	return fanout.Run(len(cs), 0, func(i int) error { return f(cs[i]) })
}

// clip limits a request to the VDI size, returning io.EOF semantics like
// io.ReaderAt.
func (v *Volume) clip(n int, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d: %w", off, proto.ResInvalidParms)
	}
	if off >= v.Size() {
		if n == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if rest := v.Size() - off; int64(n) > rest {
		return int(rest), io.EOF
	}
	return n, nil
}

// ReadAtContext reads len(p) bytes at off. Holes read as zeros.
func (v *Volume) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, eof := v.clip(len(p), off)
	if n == 0 {
		return 0, eof
	}
	var err error
	if c, ok := v.within(p[:n], off); ok {
		err = v.readChunk(ctx, c)
	} else {
		err = each(v.split(p[:n], off), func(c chunk) error { return v.readChunk(ctx, c) })
	}
	if err != nil {
		return 0, err
	}
	return n, eof
}

// readChunk reads c from the object its entry names. A hole, or an object
// gone from under an entry, is checked against the inode first (see
// "Other writers").
func (v *Volume) readChunk(ctx context.Context, c chunk) error {
	l := &v.locks[c.idx%stripes]
	l.RLock()
	owner := v.entry(c.idx)
	if owner != 0 {
		err := v.io.ReadObject(ctx, proto.VidToDataOid(owner, c.idx), c.off, c.buf)
		l.RUnlock()
		if !errors.Is(err, proto.ResNoObj) || v.fixed() {
			return err
		}
	} else {
		l.RUnlock()
		if v.fixed() || v.tree != nil {
			clear(c.buf)
			return nil
		}
	}
	l.Lock()
	defer l.Unlock()
	owner, err := v.refreshLocked(ctx, c.idx)
	if err != nil {
		return err
	}
	if owner == 0 {
		clear(c.buf)
		return nil
	}
	err = v.io.ReadObject(ctx, proto.VidToDataOid(owner, c.idx), c.off, c.buf)
	if owner == v.vid && errors.Is(err, proto.ResNoObj) {
		// An entry that survived a crash whose object did not (see
		// "Lazy allocation"): never flushed, it reads as a hole.
		clear(c.buf)
		return nil
	}
	return err
}

// TryReadAt is ReadAtContext for a caller that must not wait (the NBD
// reader, which then reads the next request): true when p holds the
// len(p) bytes at off, read without waiting for the disk, a lock, a peer
// or the cluster; false when that cannot be done now, and the caller uses
// ReadAtContext, which may wait. Only a read within one object of a
// flat-indexed volume is tried: a hole of a working VDI must be checked
// against the inode ("Other writers"), and a hyper volume's tree has a
// lock of its own.
func (v *Volume) TryReadAt(p []byte, off int64) bool {
	if v.try == nil || v.tree != nil || off < 0 || off+int64(len(p)) > v.Size() {
		return false
	}
	c, ok := v.within(p, off)
	if !ok {
		return false
	}
	l := &v.locks[c.idx%stripes]
	if !l.TryRLock() {
		return false
	}
	defer l.RUnlock()
	owner := v.entry(c.idx)
	if owner == 0 {
		if !v.fixed() {
			return false
		}
		clear(c.buf)
		return true
	}
	return v.try.TryReadObject(proto.VidToDataOid(owner, c.idx), c.off, c.buf)
}

// ReadAt implements io.ReaderAt.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	return v.ReadAtContext(context.Background(), p, off)
}

// WriteAtContext writes p at off, allocating objects (or copying them on
// write from a snapshot's) as needed. Writes past the end fail.
func (v *Volume) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return v.writeAt(ctx, p, off, v.Flags)
}

// WriteAtFUA is WriteAtContext for a write that must be on stable storage
// when it returns (force unit access) although v.Flags ask for
// write-back: its object writes, the inode update of an allocation
// included, go without proto.FlagCmdCache. Earlier writes are not made
// stable by it; Flush does that.
func (v *Volume) WriteAtFUA(ctx context.Context, p []byte, off int64) (int, error) {
	return v.writeAt(ctx, p, off, v.Flags&^proto.FlagCmdCache)
}

func (v *Volume) writeAt(ctx context.Context, p []byte, off int64, flags uint16) (int, error) {
	if v.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > v.Size() {
		return 0, fmt.Errorf("write [%d,+%d) beyond the VDI size %d: %w", off, len(p), v.Size(), proto.ResInvalidParms)
	}
	var err error
	if c, ok := v.within(p, off); ok {
		err = v.writeChunk(ctx, c, flags)
	} else {
		err = each(v.split(p, off), func(c chunk) error { return v.writeChunk(ctx, c, flags) })
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt implements io.WriterAt.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	return v.WriteAtContext(context.Background(), p, off)
}

// writeChunk writes c with flags on its object requests.
func (v *Volume) writeChunk(ctx context.Context, c chunk, flags uint16) error {
	l := &v.locks[c.idx%stripes]
	oid := proto.VidToDataOid(v.vid, c.idx)
	missing := false
	for {
		l.RLock()
		if v.entry(c.idx) == v.vid {
			err := v.writeOwn(ctx, c, flags)
			l.RUnlock()
			if !errors.Is(err, proto.ResNoObj) {
				return err
			}
			// Removed from under the entry (a discard by another
			// writer): allocate it again, below.
			missing = true
		} else {
			l.RUnlock()
		}
		l.Lock()
		if missing || v.entry(c.idx) != v.vid {
			break
		}
		// This volume allocated the object while we waited for the
		// lock: write it under the shared lock, as above, beside the
		// other writes that waited for the same allocation (under
		// this one they would go one at a time).
		l.Unlock()
	}
	defer l.Unlock()
	// Another writer may have allocated the object (or this volume, while
	// we waited): the inode decides, not the cached entry.
	owner, err := v.refreshLocked(ctx, c.idx)
	if err != nil {
		return err
	}
	if owner == v.vid {
		err := v.writeOwn(ctx, c, flags)
		if !errors.Is(err, proto.ResNoObj) {
			return err
		}
		// The entry names this VDI's object but it is gone: allocated
		// write-back and lost in a crash before a flush. Create it
		// again; the entry stays.
		return v.io.CreateAndWrite(ctx, oid, 0, c.off, c.buf, flags)
	}
	if owner != 0 || !writeBack(flags) {
		// A copy is stable before its entry names it: lost, the entry
		// would read as a hole instead of the shared data. So is an
		// object allocated by a write that is stable when it returns.
		var cow uint64
		if owner != 0 {
			cow = proto.VidToDataOid(owner, c.idx)
		}
		if err := v.io.CreateAndWrite(ctx, oid, cow, c.off, c.buf, flags&^proto.FlagCmdCache); err != nil {
			return err
		}
		return v.setOwner(ctx, c.idx, v.vid, flags)
	}
	// A write-back allocation: the object and the entry are written
	// together, neither stable before the next Flush.
	v.unstableMu.Lock()
	if v.unstable == nil {
		v.unstable = map[uint32]uint64{}
	}
	v.unstableSeq++
	v.unstable[c.idx] = v.unstableSeq
	v.unstableMu.Unlock()
	created := make(chan error, 1)
	go func() { created <- v.io.CreateAndWrite(ctx, oid, 0, c.off, c.buf, flags) }()
	err = v.setOwner(ctx, c.idx, v.vid, flags)
	if cerr := <-created; cerr != nil {
		// The entry may name a missing object now: it reads as a
		// hole, and the next write there creates the object.
		return cerr
	}
	return err
}

// writeOwn writes c into the VDI's own object, which the table names; a
// stable write to an object allocated write-back and not flushed since
// makes its entry stable too. The caller holds the stripe's lock.
func (v *Volume) writeOwn(ctx context.Context, c chunk, flags uint16) error {
	err := v.io.WriteObject(ctx, proto.VidToDataOid(v.vid, c.idx), c.off, c.buf, flags)
	if err == nil && !writeBack(flags) && v.isUnstable(c.idx) {
		err = v.stabilise(ctx, c.idx)
	}
	return err
}

// Lazy allocation. A write-back write to a hole creates the object and
// writes its table entry without sync, at the same time, like the data
// itself: the next Flush makes both stable, at the cost of the syncs it
// makes anyway, instead of two synced writes in a row on every copy per
// allocated object. A crash (a power cut) before that flush, or a
// creation that failed, may leave the entry without the object: such an
// entry of this VDI's own reads as a hole, the data the unflushed write
// replaced, and a write there creates the object again. A copy on write stays synced: its entry must never read as a
// hole, the snapshot's data being the old contents. A FUA write to an
// object allocated write-back and not yet flushed makes the entry stable
// too (stabilise), so that what FUA wrote cannot read as a hole.

// writeBack reports whether flags ask for a write stable at the next
// Flush.
func writeBack(flags uint16) bool { return flags&proto.FlagCmdCache != 0 }

// isUnstable reports whether data index idx was allocated write-back and
// not flushed since.
func (v *Volume) isUnstable(idx uint32) bool {
	v.unstableMu.Lock()
	defer v.unstableMu.Unlock()
	_, ok := v.unstable[idx]
	return ok
}

// stabilise writes the table entry of idx, this VDI's own object, again
// with sync. The caller holds the stripe's lock (either way).
func (v *Volume) stabilise(ctx context.Context, idx uint32) error {
	if v.tree != nil {
		return nil // tree changes are stored with sync
	}
	b := binary.LittleEndian.AppendUint32(nil, v.vid)
	if err := v.io.WriteObject(ctx, proto.VidToVdiOid(v.vid), int64(proto.DataVdiIDOff(idx)), b, v.Flags&^proto.FlagCmdCache); err != nil {
		return fmt.Errorf("update inode %x index %d: %w", v.vid, idx, err)
	}
	return nil
}

// Other writers. The table is a cache of the inode's data_vdi_id, and one
// writer per VDI is the rule, as in Sheepdog; but QEMU, collie or another
// front-end writing the same VDI meanwhile must not cost acknowledged
// data. So the cache is trusted for objects it names and checked against
// the inode wherever trusting it could lose or hide data: before an
// allocation (which would otherwise create the object anew over another
// writer's), before a hole reads as zeros, when an object it names has
// gone (NO_OBJ: a discard elsewhere) and, through Refresh, before holes
// are reported. A snapshot's table never changes (fixed) and is never
// read again. The store does its part too: a CREATE of part of an object
// that exists writes only that part (store.CreateOrWrite).

// fixed reports whether the table cannot change under the volume (a
// snapshot's).
func (v *Volume) fixed() bool { return v.ino.IsSnapshot() }

// readEntries reads data_vdi_id[first, first+len(out)) from the inode.
func (v *Volume) readEntries(ctx context.Context, first uint32, out []uint32) error {
	var one [4]byte
	buf := one[:]
	if len(out) > 1 {
		buf = make([]byte, 4*len(out))
	}
	if err := v.io.ReadObject(ctx, proto.VidToVdiOid(v.vid), int64(proto.DataVdiIDOff(first)), buf); err != nil {
		return fmt.Errorf("read inode %x index %d: %w", v.vid, first, err)
	}
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[4*i:])
	}
	return nil
}

// refreshLocked reads entry idx from the inode into the cached table and
// returns it. The caller holds the stripe's Lock. (The inode names an
// object only once it exists, so the invariant on locks holds.)
func (v *Volume) refreshLocked(ctx context.Context, idx uint32) (uint32, error) {
	if v.tree != nil {
		return v.entry(idx), nil
	}
	var e [1]uint32
	if err := v.readEntries(ctx, idx, e[:]); err != nil {
		return 0, err
	}
	v.ino.DataVdiID[idx] = e[0]
	return e[0], nil
}

// Refresh takes into the cached table the objects other writers allocated
// in [off, off+n) since the volume read it: holes are read again from the
// inode, in one request. Call it before reporting holes (NBD BLOCK_STATUS,
// SEEK_HOLE), where a stale hole would make a copy skip data.
func (v *Volume) Refresh(ctx context.Context, off, n int64) error {
	if v.fixed() || v.tree != nil || n <= 0 || off < 0 || off >= v.Size() {
		return nil
	}
	first := uint32(off / v.objSize)
	last := uint32((min(off+n, v.Size()) - 1) / v.objSize)
	fresh := make([]uint32, last-first+1)
	if err := v.readEntries(ctx, first, fresh); err != nil {
		return err
	}
	for i, owner := range fresh {
		idx := first + uint32(i)
		if owner == 0 {
			continue
		}
		l := &v.locks[idx%stripes]
		l.Lock()
		if v.ino.DataVdiID[idx] == 0 {
			v.ino.DataVdiID[idx] = owner
		}
		l.Unlock()
	}
	return nil
}

// setOwner writes data_vdi_id[idx] to the inode with flags, then to the
// cached table. The caller holds the stripe's Lock.
func (v *Volume) setOwner(ctx context.Context, idx, owner uint32, flags uint16) error {
	if v.tree != nil {
		return v.setTree(ctx, idx, owner)
	}
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(owner), byte(owner>>8), byte(owner>>16), byte(owner>>24)
	if err := v.io.WriteObject(ctx, proto.VidToVdiOid(v.vid), int64(proto.DataVdiIDOff(idx)), b[:], flags); err != nil {
		return fmt.Errorf("update inode %x index %d: %w", v.vid, idx, err)
	}
	v.ino.DataVdiID[idx] = owner
	return nil
}

// Discard makes [off, off+n) read as zeros and frees what it can: whole
// objects are dropped from the inode (and removed when this VDI owns them);
// partial ranges of this VDI's own objects are punched when the object
// layer is a Puncher; other partial ranges of allocated objects are
// overwritten with zeros (copying a shared object on write).
func (v *Volume) Discard(ctx context.Context, off, n int64) error {
	return v.zero(ctx, off, n, true)
}

// WriteZeroes makes [off, off+n) read as zeros. With noHole, whole objects
// stay allocated (they are written with zeros) instead of being freed, and
// partial ranges are written with zeros, never punched; without it,
// WriteZeroes is Discard.
func (v *Volume) WriteZeroes(ctx context.Context, off, n int64, noHole bool) error {
	return v.zero(ctx, off, n, !noHole)
}

var zeroObject []byte
var zeroOnce sync.Once

func (v *Volume) zeros(n int64) []byte {
	zeroOnce.Do(func() { zeroObject = make([]byte, 1<<proto.MaxBlockSizeShift>>8) })
	if n <= int64(len(zeroObject)) {
		return zeroObject[:n]
	}
	return make([]byte, n)
}

func (v *Volume) zero(ctx context.Context, off, n int64, punch bool) error {
	if v.readOnly {
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off+n > v.Size() {
		return fmt.Errorf("zero [%d,+%d) beyond the VDI size %d: %w", off, n, v.Size(), proto.ResInvalidParms)
	}
	// A hole the cache holds may have been allocated elsewhere; zeroing
	// must reach that object too.
	if err := v.Refresh(ctx, off, n); err != nil {
		return err
	}
	for n > 0 {
		idx := uint32(off / v.objSize)
		o := off % v.objSize
		k := min(n, v.objSize-o)
		var err error
		if punch && o == 0 && k == v.objSize {
			err = v.dropObject(ctx, idx)
		} else if v.Owner(idx) != 0 {
			err = v.zeroChunk(ctx, idx, o, k, punch)
		}
		if err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// zeroChunk makes [off, off+n) of the allocated data index idx read as
// zeros. With punch, an object this VDI owns is punched when the object
// layer is a Puncher, under the stripe's RLock as writeChunk writes it:
// the entry cannot change meanwhile, so the punched object is this VDI's
// own. Any other object (one shared with a snapshot or clone, whose
// punch would change the snapshot too) gets the zeros written through
// writeChunk, which copies it on write first.
func (v *Volume) zeroChunk(ctx context.Context, idx uint32, off, n int64, punch bool) error {
	if p, ok := v.io.(Puncher); ok && punch {
		l := &v.locks[idx%stripes]
		l.RLock()
		if v.entry(idx) == v.vid {
			err := p.PunchObject(ctx, proto.VidToDataOid(v.vid, idx), off, n, v.Flags)
			l.RUnlock()
			return err
		}
		l.RUnlock()
	}
	return v.writeChunk(ctx, chunk{idx: idx, off: off, buf: v.zeros(n)}, v.Flags)
}

// dropObject clears data_vdi_id[idx] and removes the object if this VDI
// owns it. The table entry is cleared first, so a crash in between leaves
// an unreferenced object, never a reference to a missing one.
func (v *Volume) dropObject(ctx context.Context, idx uint32) error {
	l := &v.locks[idx%stripes]
	l.Lock()
	defer l.Unlock()
	owner := v.entry(idx)
	if owner == 0 {
		return nil
	}
	if err := v.setOwner(ctx, idx, 0, v.Flags&^proto.FlagCmdCache); err != nil {
		return err
	}
	if owner == v.vid {
		if err := v.io.RemoveObject(ctx, proto.VidToDataOid(v.vid, idx)); err != nil && !errors.Is(err, proto.ResNoObj) {
			return err
		}
	}
	return nil
}

// Flush makes every write acknowledged so far stable (write-back writes
// and allocations included).
//
// An allocation is forgotten as unstable only once a flush that began
// after it returned: until then a FUA write to it still stabilises it.
func (v *Volume) Flush(ctx context.Context) error {
	v.unstableMu.Lock()
	covered := maps.Clone(v.unstable)
	v.unstableMu.Unlock()
	var err error
	if f, ok := v.io.(VdiFlusher); ok {
		err = f.FlushVdi(ctx, v.vid)
	} else {
		err = v.io.Flush(ctx)
	}
	if err != nil {
		return err
	}
	if len(covered) > 0 {
		v.unstableMu.Lock()
		for idx, seq := range covered {
			if v.unstable[idx] == seq {
				delete(v.unstable, idx)
			}
		}
		v.unstableMu.Unlock()
	}
	return nil
}

// Allocated reports whether data index idx has an object (own or shared).
func (v *Volume) Allocated(idx uint32) bool { return v.Owner(idx) != 0 }
