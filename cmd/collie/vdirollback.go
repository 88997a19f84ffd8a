package main

import (
	"encoding/binary"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// rollbackQuestion is dog's confirmation for vdi rollback.
const rollbackQuestion = "This operation discards any changes made since the previous\n" +
	"snapshot was taken.  Continue? [yes/no]: "

// vdiRollback is dog's vdi rollback (docs/protocol.md §4.4): read the snapshot's
// header, delete the working VDI, then create a new working VDI of the same
// name based on the snapshot (a clone under the same name, with the next
// snap_id).
func vdiRollback(s *session, args []string) error {
	name := args[0]
	o := s.opts
	if o.snapID == 0 && o.snapTag == "" {
		return usagef("Please specify the '-s' option")
	}
	base, err := s.openVdi(name, o.snapID, o.snapTag)
	if err != nil {
		return err
	}
	ino, err := s.readInode(base, false)
	if err != nil {
		return failf(exitFailure, "%s: %v", snapshotReadError(name, o.snapID, o.snapTag), err)
	}
	if !o.force && !s.confirm(rollbackQuestion) {
		return nil
	}
	if err := s.deleteVdi(name, 0, ""); err != nil {
		s.report(err)
		return failf(exitFailure, "Failed to delete the current state")
	}
	newVid, err := s.newVdi(name, ino.VdiSize, base, false, ino.NrCopies, ino.CopyPolicy, ino.StorePolicy, ino.BlockSizeShift)
	if err != nil {
		return err
	}
	if o.verbose {
		if o.raw {
			fmt.Fprintf(s.out, "%x\n", newVid)
		} else {
			fmt.Fprintf(s.out, "New VDI ID of rollbacked VDI: %x\n", newVid)
		}
	}
	return nil
}

// report prints the message of a failure that the command goes on from
// (dog prints it where it happens, then its caller adds its own line).
func (s *session) report(err error) {
	if ee, ok := err.(*exitError); ok && ee.msg == "" {
		return
	}
	s.out.Flush()
	fmt.Fprintln(s.stderr, err)
}

// vdiResize is dog's vdi resize: grow only, by rewriting vdi_size in the
// 4664-byte header of the working VDI.
func vdiResize(s *session, args []string) error {
	name := args[0]
	if len(args) < 2 {
		return usagef("Please specify the new size for the VDI")
	}
	size, err := sizeArg(args[1])
	if err != nil {
		return err
	}
	vid, err := s.openVdi(name, 0, "")
	if err != nil {
		return err
	}
	oid := proto.VidToVdiOid(vid)
	hdr := make([]byte, proto.InodeHeaderSize)
	if err := s.readObj(oid, 0, hdr, true); err != nil {
		return failf(exitFailure, "Failed to read a vdi %s: %v", name, err)
	}
	var ino proto.Inode
	if err := ino.UnmarshalHeader(hdr); err != nil {
		return failf(exitFailure, "Failed to read a vdi %s: %v", name, err)
	}
	if (ino.StorePolicy == 0 && size > proto.OldMaxVdiSize(ino.BlockSizeShift)) || size > proto.MaxVdiSize {
		return usagef("New VDI size is too large")
	}
	if size < ino.VdiSize {
		return usagef("Shrinking VDIs is not implemented")
	}
	binary.LittleEndian.PutUint64(hdr[proto.InodeVdiSizeOffset:], size)
	if err := s.writeObj(oid, hdr, 0, ino.NrCopies, ino.CopyPolicy, false, true); err != nil {
		return failf(exitFailure, "Failed to update an inode header")
	}
	return nil
}
