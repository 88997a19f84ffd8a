package main

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// inodeReadSize is what dog reads of an inode while listing: the header
// plus the 8-byte B-tree index header that follows it.
const inodeReadSize = proto.InodeHeaderSize + 8

// findVdi is dog's find_vdi_name: GET_VDI_INFO with the 512-byte name+tag
// payload and the snapshot id.
func (s *session) findVdi(name string, snapID uint32, tag string) (uint32, proto.Result, error) {
	req := proto.NewRequest(proto.OpGetVdiInfo)
	req.SetVdi(proto.VdiArgs{SnapID: snapID})
	rsp, _, err := s.do(&req, proto.VdiName(name, tag, true), nil)
	if err != nil {
		return 0, 0, err
	}
	return rsp.Vdi().VdiID, rsp.Result, nil
}

// openVdi looks a VDI up and fails the way dog's read_vdi_obj does.
func (s *session) openVdi(name string, snapID uint32, tag string) (uint32, error) {
	vid, res, err := s.findVdi(name, snapID, tag)
	if err != nil {
		return 0, err
	}
	if res != proto.ResSuccess {
		return 0, failf(exitFailure, "Failed to open VDI %s (snapshot id: %d snapshot tag: %s): %s", name, snapID, tag, res)
	}
	return vid, nil
}

// readObj is one READ_OBJ; a non-success result comes back as an error
// wrapping the proto.Result.
func (s *session) readObj(oid uint64, off uint32, buf []byte, direct bool) error {
	req := proto.NewRequest(proto.OpReadObj)
	if direct {
		req.Flags |= proto.FlagCmdDirect
	}
	req.SetObj(proto.ObjArgs{Oid: oid, Offset: off})
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return rsp.Result
	}
	if n != len(buf) {
		return proto.ResEIO
	}
	return nil
}

// writeObj is dog's dog_write_object: WRITE_OBJ, or CREATE_AND_WRITE_OBJ
// when create, with the VDI's copies and policy in the header.
func (s *session) writeObj(oid uint64, data []byte, off uint32, copies, policy uint8, create, direct bool) error {
	op := proto.OpWriteObj
	if create {
		op = proto.OpCreateAndWriteObj
	}
	req := proto.NewRequest(op)
	if direct {
		req.Flags |= proto.FlagCmdDirect
	}
	req.SetObj(proto.ObjArgs{Oid: oid, Offset: off, Copies: copies, CopyPolicy: policy})
	if data == nil {
		data = []byte{}
	}
	rsp, _, err := s.do(&req, data, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return rsp.Result
	}
	return nil
}

// readInode reads vid's inode header and, with table, the data_vdi_id
// entries that cover vdi_size.
func (s *session) readInode(vid uint32, table bool) (*proto.Inode, error) {
	oid := proto.VidToVdiOid(vid)
	buf := make([]byte, proto.InodeHeaderSize)
	if err := s.readObj(oid, 0, buf, true); err != nil {
		return nil, err
	}
	ino := &proto.Inode{}
	if err := ino.UnmarshalHeader(buf); err != nil {
		return nil, err
	}
	if table {
		if err := s.readTable(ino); err != nil {
			return nil, err
		}
	}
	return ino, nil
}

// dataObjects is count_data_objs: the number of data_vdi_id entries that
// cover the VDI.
func dataObjects(ino *proto.Inode) uint64 {
	obj := uint64(1) << ino.BlockSizeShift
	return (ino.VdiSize + obj - 1) / obj
}

// readTable fills ino.DataVdiID with the entries covering vdi_size (the
// rest stay zero).
func (s *session) readTable(ino *proto.Inode) error {
	ino.DataVdiID = make([]uint32, proto.MaxDataIndexes)
	n := min(dataObjects(ino), proto.MaxDataIndexes)
	if ino.StorePolicy != 0 || n == 0 {
		return nil
	}
	buf := make([]byte, 4*n)
	if err := s.readObj(proto.VidToVdiOid(ino.VdiID), proto.DataVdiIDOffset, buf, true); err != nil {
		return err
	}
	for i := range n {
		ino.DataVdiID[i] = binary.LittleEndian.Uint32(buf[4*i:])
	}
	return nil
}

// readTree reads the B-tree index of ino, a hyper volume.
func (s *session) readTree(ino *proto.Inode) (*proto.Btree, error) {
	oid := proto.VidToVdiOid(ino.VdiID)
	var hdr [proto.BtreeHeaderSize]byte
	if err := s.readObj(oid, proto.DataVdiIDOffset, hdr[:], true); err != nil {
		return nil, err
	}
	_, used, err := proto.BtreeRootDepth(hdr[:])
	if err != nil {
		used = proto.BtreeHeaderSize // DecodeBtree reports it
	}
	root := make([]byte, max(used, proto.BtreeHeaderSize))
	if err := s.readObj(oid, proto.DataVdiIDOffset, root, true); err != nil {
		return nil, err
	}
	return proto.DecodeBtree(ino.VdiID, ino.BtreeCounter, root, func(node uint64) ([]byte, error) {
		b := make([]byte, proto.BtreeNodeSize)
		return b, s.readObj(node, 0, b, true)
	})
}

// newVdi is dog's do_vdi_create: NEW_VDI with the 256-byte name.
func (s *session) newVdi(name string, size uint64, base uint32, snapshot bool, copies, policy, store, shift uint8) (uint32, error) {
	req := proto.NewRequest(proto.OpNewVdi)
	var snapID uint32
	if snapshot {
		snapID = 1
	}
	req.SetVdi(proto.VdiArgs{VdiSize: size, BaseVdiID: base, Copies: copies, CopyPolicy: policy,
		StorePolicy: store, BlockSizeShift: shift, SnapID: snapID})
	rsp, _, err := s.do(&req, proto.VdiName(name, "", false), nil)
	if err != nil {
		return 0, err
	}
	if rsp.Result != proto.ResSuccess {
		return 0, failf(exitFailure, "Failed to create VDI %s: %s", name, rsp.Result)
	}
	return rsp.Vdi().VdiID, nil
}

// parallel runs f(0..n-1) with at most width calls in flight (the client
// pipelines them on one connection) and returns the first error; no new
// call starts after a failure (fanout.Run).
func parallel(n uint64, width int, f func(i uint64) error) error {
	return fanout.Run(int(n), width, func(i int) error { return f(uint64(i)) })
}

// allocate creates data object idx of vid (empty, or with data) and points
// data_vdi_id[idx] of vid at it, as dog's -P loops do.
func (s *session) allocate(ino *proto.Inode, vid uint32, idx uint32, data []byte) error {
	if err := s.writeObj(proto.VidToDataOid(vid, idx), data, 0, ino.NrCopies, ino.CopyPolicy, true, true); err != nil {
		return err
	}
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], vid)
	return s.writeObj(proto.VidToVdiOid(vid), v[:], proto.DataVdiIDOff(idx), ino.NrCopies, ino.CopyPolicy, false, true)
}

func vdiCreate(s *session, args []string) error {
	name := args[0]
	if err := checkName("VDI name", name, proto.MaxVdiLen); err != nil {
		return err
	}
	if len(args) < 2 {
		return usagef("Please specify the VDI size")
	}
	size, err := sizeArg(args[1])
	if err != nil {
		return err
	}
	if size == 0 {
		return usagef("VDI size must be larger than 0")
	}
	o := s.opts
	shift := o.blockSizeShift
	var store uint8
	if o.snap.hyper {
		store = 1
		if shift == 0 {
			shift = proto.DefaultBlockSizeShift // as dog: hyper volumes use 4 MiB objects
		}
	}
	if shift == 0 {
		req := proto.NewRequest(proto.OpClusterInfo)
		buf := make([]byte, proto.ClusterInfoSize)
		rsp, n, err := s.do(&req, nil, buf)
		if err != nil {
			return err
		}
		var ci proto.ClusterInfo
		if n < 48 || ci.Unmarshal(buf) != nil || ci.Ctime == 0 {
			return failf(exitFailure, "Failed to create VDI %s: %s", name, proto.ResWaitForFormat)
		}
		if rsp.Result != proto.ResSuccess {
			return failf(exitFailure, "%s", rsp.Result)
		}
		shift = ci.BlockSizeShift
	}
	maxSize := proto.OldMaxVdiSize(shift)
	if size > maxSize && store == 0 {
		return usagef("VDI size is larger than %s bytes, please use '-y' to create a hyper volume with size up to %s bytes"+
			" or use '-z' to create larger object size volume", strnumber(maxSize, o.raw), strnumber(proto.MaxVdiSize, o.raw))
	}
	if size > proto.MaxVdiSize {
		return usagef("VDI size is too large")
	}
	if store != 0 && o.prealloc {
		return usagef("preallocation of a hyper volume is not supported")
	}
	vid, err := s.newVdi(name, size, 0, false, o.copies, o.copyPolicy, store, shift)
	if err != nil {
		return err
	}
	if o.prealloc {
		ino, err := s.readInode(vid, false)
		if err != nil {
			return failf(exitFailure, "Failed to read a newly created VDI object: %v", err)
		}
		n := dataObjects(ino)
		objSize := uint64(1) << ino.BlockSizeShift
		prog := newProgress(s.stderr, ino.VdiSize)
		var done atomic.Uint64
		err = parallel(n, 16, func(i uint64) error {
			if err := s.allocate(ino, vid, uint32(i), nil); err != nil {
				return failf(exitFailure, "Failed to write object %016x: %v", proto.VidToDataOid(vid, uint32(i)), err)
			}
			prog.update(min(done.Add(objSize), ino.VdiSize))
			return nil
		})
		prog.finish()
		if err != nil {
			return err
		}
	}
	if o.verbose {
		if o.raw {
			fmt.Fprintf(s.out, "%x\n", vid)
		} else {
			fmt.Fprintf(s.out, "VDI ID of newly created VDI: %x\n", vid)
		}
	}
	return nil
}

func vdiSnapshot(s *session, args []string) error {
	name := args[0]
	o := s.opts
	if o.snapID != 0 {
		return usagef("Please specify a non-integer value for a snapshot tag name")
	}
	if err := checkName("Snapshot tag", o.snapTag, proto.MaxVdiTagLen); err != nil {
		return err
	}
	vid, res, err := s.findVdi(name, 0, o.snapTag)
	if err != nil {
		return err
	}
	var ino *proto.Inode
	switch res {
	case proto.ResNoTag:
		if vid, err = s.openVdi(name, 0, ""); err != nil {
			return err
		}
		if ino, err = s.readInode(vid, false); err != nil {
			return failf(exitFailure, "Failed to read a vdi %s: %v", name, err)
		}
	case proto.ResSuccess:
		if ino, err = s.readInode(vid, false); err != nil {
			return failf(exitFailure, "Failed to read a vdi %s: %v", name, err)
		}
		if ino.IsSnapshot() {
			return failf(exitFailure, "Failed to create snapshot for %s, maybe snapshot id (%d) or tag (%s) is existed",
				name, o.snapID, o.snapTag)
		}
	default:
		return failf(exitFailure, "Failed to create snapshot for %s: %s", name, res)
	}
	if ino.StorePolicy != 0 {
		return failf(exitFailure, "creating a snapshot of hypervolume is not supported")
	}
	if o.reduceIdentical {
		if err := s.readTable(ino); err != nil {
			return failf(exitFailure, "Failed to read a vdi %s: %v", name, err)
		}
		own := false
		for _, v := range ino.DataVdiID {
			if v != 0 && v == vid {
				own = true
				break
			}
		}
		if !own {
			if o.verbose {
				fmt.Fprintf(s.stderr, "VDI %s doesn't have its own objects, skipping creation of snapshot\n", name)
			}
			return nil
		}
	}
	tag := make([]byte, proto.MaxVdiTagLen)
	copy(tag[:proto.MaxVdiTagLen-1], o.snapTag)
	if err := s.writeObj(proto.VidToVdiOid(vid), tag, proto.InodeTagOffset, ino.NrCopies, ino.CopyPolicy, false, false); err != nil {
		return failf(exitFailure, "Failed to write object %016x: %v", proto.VidToVdiOid(vid), err)
	}
	newVid, err := s.newVdi(name, ino.VdiSize, vid, true, ino.NrCopies, ino.CopyPolicy, ino.StorePolicy, ino.BlockSizeShift)
	if err != nil {
		return err
	}
	if o.verbose {
		if o.raw {
			fmt.Fprintf(s.out, "%x %x\n", newVid, vid)
		} else {
			fmt.Fprintf(s.out, "new VID of original VDI: %x, VDI ID of newly created snapshot: %x\n", newVid, vid)
		}
	}
	return nil
}

func vdiClone(s *session, args []string) error {
	o := s.opts
	if len(args) < 2 {
		return usagef("Destination VDI name must be specified")
	}
	src, dst := args[0], args[1]
	if err := checkName("VDI name", dst, proto.MaxVdiLen); err != nil {
		return err
	}
	if o.snapID == 0 && o.snapTag == "" {
		return usagef("Only snapshot VDIs can be cloned: please specify the '-s' option")
	}
	baseVid, err := s.openVdi(src, o.snapID, o.snapTag)
	if err != nil {
		return err
	}
	copyData := o.prealloc || o.noShare
	ino, err := s.readInode(baseVid, copyData)
	if err != nil {
		return failf(exitFailure, "%s: %v", snapshotReadError(src, o.snapID, o.snapTag), err)
	}
	base := baseVid
	if o.noShare {
		base = 0
	}
	newVid, err := s.newVdi(dst, ino.VdiSize, base, false, ino.NrCopies, ino.CopyPolicy, ino.StorePolicy, ino.BlockSizeShift)
	if err != nil {
		return err
	}
	if copyData {
		if err := s.cloneData(ino, newVid); err != nil {
			return err
		}
	}
	if o.verbose {
		if o.raw {
			fmt.Fprintf(s.out, "%x\n", newVid)
		} else {
			fmt.Fprintf(s.out, "VDI ID of newly created clone: %x\n", newVid)
		}
	}
	return nil
}

// cloneData gives the new clone its own objects: copies of the source's
// (for -n), empty ones for the source's holes (for -P).
func (s *session) cloneData(src *proto.Inode, newVid uint32) error {
	objSize := uint64(1) << src.BlockSizeShift
	prog := newProgress(s.stderr, src.VdiSize)
	var done atomic.Uint64
	bufs := sync.Pool{New: func() any { b := make([]byte, objSize); return &b }}
	err := parallel(dataObjects(src), 8, func(i uint64) error {
		idx := uint32(i)
		defer func() { prog.update(min(done.Add(objSize), src.VdiSize)) }()
		var data []byte
		if owner := src.DataVdiID[idx]; owner != 0 {
			bp := bufs.Get().(*[]byte)
			defer bufs.Put(bp)
			buf := *bp
			if err := s.readObj(proto.VidToDataOid(owner, idx), 0, buf, true); err != nil {
				return failf(exitFailure, "Failed to read object %016x: %v", proto.VidToDataOid(owner, idx), err)
			}
			data = buf
		} else if !s.opts.prealloc {
			return nil
		}
		if err := s.allocate(src, newVid, idx, data); err != nil {
			return failf(exitFailure, "Failed to write object %016x: %v", proto.VidToDataOid(newVid, idx), err)
		}
		return nil
	})
	prog.finish()
	return err
}

// snapshotReadError is read_vdi_obj's message when the inode read fails.
func snapshotReadError(name string, snapID uint32, tag string) string {
	switch {
	case snapID != 0:
		return fmt.Sprintf("Failed to read a snapshot %s:%d", name, snapID)
	case tag != "":
		return fmt.Sprintf("Failed to read a snapshot %s:%s", name, tag)
	}
	return fmt.Sprintf("Failed to read a vdi %s", name)
}

func vdiDelete(s *session, args []string) error {
	return s.deleteVdi(args[0], s.opts.snapID, s.opts.snapTag)
}

// deleteVdi is dog's do_vdi_delete: zero the table in batches, then
// DEL_VDI for the name and the snapshot id or tag (the working VDI when
// both are empty). -B, -I and -m shape the batches.
func (s *session) deleteVdi(name string, snapID uint32, snapTag string) error {
	o := s.opts
	vid, err := s.openVdi(name, snapID, snapTag)
	if err != nil {
		return err
	}
	ino, err := s.readInode(vid, true)
	if err != nil {
		return failf(exitFailure, "failed to read inode object: %016x: %v", proto.VidToVdiOid(vid), err)
	}
	batch := o.batch
	if batch == 0 {
		batch = 128
	}
	// Zero data_vdi_id in batches of up to batch allocated entries; each
	// write makes the gateway drop the references (docs/protocol.md §4.6).
	n := int(min(dataObjects(ino), proto.MaxDataIndexes))
	reclaimed := 0
	for i := 0; i < n; {
		if o.maxReclaim > 0 && reclaimed >= o.maxReclaim {
			break
		}
		for i < n && ino.DataVdiID[i] == 0 {
			i++
		}
		start := i
		for filled := 0; i < n && filled < batch; {
			if ino.DataVdiID[i] != 0 {
				filled++
				reclaimed++
			}
			i++
			if o.maxReclaim > 0 && reclaimed >= o.maxReclaim {
				break
			}
		}
		if i == start {
			break
		}
		zeros := make([]byte, 4*(i-start))
		if err := s.writeObj(proto.VidToVdiOid(vid), zeros, proto.DataVdiIDOff(uint32(start)), ino.NrCopies, ino.CopyPolicy, false, true); err != nil {
			return failf(exitFailure, "failed to update inode for discarding objects: %016x: %v", proto.VidToVdiOid(vid), err)
		}
		if i < n && o.interval > 0 {
			time.Sleep(time.Duration(o.interval) * time.Second)
		}
	}
	if o.maxReclaim > 0 {
		return nil
	}
	req := proto.NewRequest(proto.OpDelVdi)
	req.SetVdi(proto.VdiArgs{SnapID: snapID})
	rsp, _, err := s.do(&req, proto.VdiName(name, snapTag, true), nil)
	if err != nil {
		return err
	}
	switch rsp.Result {
	case proto.ResSuccess:
		return nil
	case proto.ResNoVdi:
		return failf(exitMissing, "Failed to delete %s: %s", name, rsp.Result)
	}
	return failf(exitFailure, "Failed to delete %s: %s", name, rsp.Result)
}

// checkName refuses a name (or tag) a new VDI cannot carry: longer than
// its field holds (Sheepdog's dog would cut it silently), not UTF-8, or
// with control characters (a newline splits `vdi list -r`, an escape
// sequence reaches the terminal of whoever lists the VDIs).
func checkName(what, name string, field int) error {
	if len(name) > field-1 {
		return usagef("%s is too long: %d bytes, at most %d", what, len(name), field-1)
	}
	if !utf8.ValidString(name) {
		return usagef("%s is not valid UTF-8", what)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return usagef("%s must not contain control characters (%q)", what, r)
		}
	}
	return nil
}
