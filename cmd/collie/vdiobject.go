package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// objectSubcommands are the subcommands of "vdi object", in dog's order.
var objectSubcommands = []struct {
	name, desc string
	run        func(s *session, arg string) error
}{
	{"location", "show object location information", vdiObjectLocation},
	{"map", "show object map information", vdiObjectMap},
	{"dump-inode", "dump inode information", vdiObjectDumpInode},
}

// vdiObject dispatches "vdi object {location|map|dump-inode} <arg>". An
// unknown subcommand prints the usage and fails, as dog's
// do_generic_subcommand does.
func vdiObject(s *session, args []string) error {
	for _, sub := range objectSubcommands {
		if sub.name != args[0] {
			continue
		}
		if len(args) < 2 {
			return &exitError{code: exitUsage, usage: true}
		}
		return sub.run(s, args[1])
	}
	return &exitError{code: exitFailure, usage: true}
}

// readFullInode is read_vdi_obj with the whole inode: the header and the
// data_vdi_id entries that cover the VDI.
func (s *session) readFullInode(name string) (*proto.Inode, error) {
	o := s.opts
	vid, err := s.openVdi(name, o.snapID, o.snapTag)
	if err != nil {
		return nil, err
	}
	ino, err := s.readInode(vid, true)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, err
		}
		return nil, failf(exitFailure, "%s", snapshotReadError(name, o.snapID, o.snapTag))
	}
	return ino, nil
}

// owner is data_vdi_id[idx] (0 past the flat table).
func owner(ino *proto.Inode, idx uint64) uint32 {
	if idx >= uint64(len(ino.DataVdiID)) {
		return 0
	}
	return ino.DataVdiID[idx]
}

func vdiObjectLocation(s *session, name string) error {
	if err := s.updateNodeList(); err != nil {
		return err
	}
	ino, err := s.readFullInode(name)
	if err != nil {
		s.report(err)
		return failf(exitFailure, "FATAL: no inode objects")
	}
	vid, idx := ino.VdiID, s.opts.snap.index
	if idx == noIndex {
		fmt.Fprintf(s.out, "Looking for the inode object 0x%x with %d nodes\n\n", vid, len(s.nodes))
		s.printObjectHolders(proto.VidToVdiOid(vid))
		s.printExpectedLocation(proto.VidToVdiOid(vid), int(ino.NrCopies))
		return nil
	}
	if idx >= proto.MaxDataObjs {
		s.out.WriteString("The offset is too large!\n")
		return &exitError{code: exitFailure}
	}
	dataVid := owner(ino, idx)
	if dataVid == 0 {
		fmt.Fprintf(s.out, "The inode object 0x%x idx %d is not allocated\n", vid, idx)
		return nil
	}
	oid := proto.VidToDataOid(dataVid, uint32(idx))
	fmt.Fprintf(s.out, "Looking for the object %016x (vid 0x%x idx %d, %d copies) with %d nodes\n\n",
		oid, vid, idx, ino.NrCopies, len(s.nodes))
	s.printObjectHolders(oid)
	s.printExpectedLocation(oid, int(ino.NrCopies))
	return nil
}

// printObjectHolders asks every node (EXIST) whether it stores oid.
func (s *session) printObjectHolders(oid uint64) {
	for _, n := range s.nodes {
		req := proto.NewRequest(proto.OpExist)
		req.Epoch = s.epoch
		req.SetObj(proto.ObjArgs{Oid: oid})
		var rsp proto.Response
		err := s.onNode(n, func(c *client.Client) error {
			var err error
			rsp, _, err = doOn(s.ctx, c, &req, nil, nil)
			return err
		})
		if err != nil {
			s.report(err)
			continue
		}
		sheep := n.NodeID.String()
		switch rsp.Result {
		case proto.ResSuccess:
			fmt.Fprintf(s.out, "%s has the object\n", sheep)
		case proto.ResNoObj:
			fmt.Fprintf(s.out, "%s doesn't have the object\n", sheep)
		case proto.ResOldNodeVer, proto.ResNewNodeVer:
			s.report(errors.New("The node list has changed: please try again"))
		default:
			s.report(fmt.Errorf("%s: hit an unexpected error (%s)", sheep, rsp.Result))
		}
	}
}

// printExpectedLocation prints where the placement ring puts oid's copies.
func (s *session) printExpectedLocation(oid uint64, copies int) {
	s.out.WriteString("\nAccording to sheepdog algorithm, the object should be located at:\n")
	var addrs []string
	for _, n := range placement.New(s.nodes).Locate(oid, copies) {
		addrs = append(addrs, n.NodeID.String())
	}
	s.out.WriteString(strings.Join(addrs, " ") + "\n")
}

func vdiObjectMap(s *session, name string) error {
	ino, err := s.readFullInode(name)
	if err != nil {
		s.report(err)
		return failf(exitFailure, "FATAL: %s not found", name)
	}
	s.out.WriteString("Index       VID\n")
	if idx := s.opts.snap.index; idx != noIndex {
		fmt.Fprintf(s.out, "%08d %8x\n", idx, owner(ino, idx))
		return nil
	}
	for idx := range min(dataObjects(ino), uint64(len(ino.DataVdiID))) {
		if v := ino.DataVdiID[idx]; v != 0 {
			fmt.Fprintf(s.out, "%08d %8x\n", idx, v)
		}
	}
	return nil
}

// vdiObjectDumpInode prints an inode object file (a path, not a VDI name).
func vdiObjectDumpInode(s *session, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return failf(exitFailure, "failed to open inode object file: %s", errnoText(err))
	}
	defer f.Close()
	buf := make([]byte, proto.InodeSize)
	if n, err := f.ReadAt(buf, 0); n != len(buf) {
		return failf(exitFailure, "failed to read inode object file: %v", err)
	}
	var ino proto.Inode
	if err := ino.UnmarshalRange(0, buf); err != nil {
		return failf(exitFailure, "failed to read inode object file: %v", err)
	}
	w := s.out
	fmt.Fprintf(w, "name: %s\ntag: %s\ncreate_time: %x\nsnap_ctime: %x\nvm_clock_nsec: %x\n",
		ino.Name, ino.Tag, ino.CreateTime, ino.SnapCtime, ino.VMClockNsec)
	fmt.Fprintf(w, "copy_policy: %d\nstore_policy: %d\nnr_copies: %d\nblock_size_shift: %d\n",
		ino.CopyPolicy, ino.StorePolicy, ino.NrCopies, ino.BlockSizeShift)
	fmt.Fprintf(w, "snap_id: %d\nvdi_id: %x\nparent_vdi_id: %x\nbtree_counter: %d\n",
		ino.SnapID, ino.VdiID, ino.ParentVdiID, ino.BtreeCounter)
	w.WriteString("data_vdi_id:\n")
	for i, v := range ino.DataVdiID {
		if v != 0 {
			fmt.Fprintf(w, "%d: %d\n", i, v)
		}
	}
	w.WriteString("gref:\n")
	for i, v := range ino.DataVdiID {
		g := ino.Gref[i]
		if v == 0 {
			if g.Generation != 0 || g.Count != 0 {
				fmt.Fprintf(w, "WARNING: index %d doesn't have data vdi ID but its generation and count is not zero(%d, %d)",
					i, g.Generation, g.Count)
			}
			continue
		}
		fmt.Fprintf(w, "%d: %x, %d, %d\n", i, v, g.Generation, g.Count)
	}
	return nil
}
