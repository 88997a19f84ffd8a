package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// dog's incremental backup stream (docs/protocol.md §8.1): a header
// {u32 version, u32 magic}, then records {u32 idx, u32 offset, u32 length,
// u32 reserved} each followed by length bytes of object idx at offset, and
// an end record with idx 0xFFFFFFFF. All integers little-endian.
const (
	backupVersion   = 1
	backupMagic     = 0x11921192
	backupEnd       = 0xFFFFFFFF
	backupRecSize   = 16
	backupSector    = 512
	backupHeaderLen = 8
)

// backupRecord is one changed range of one object.
type backupRecord struct {
	Idx, Offset, Length uint32
}

func (r backupRecord) marshal() []byte {
	b := make([]byte, backupRecSize)
	binary.LittleEndian.PutUint32(b[0:], r.Idx)
	binary.LittleEndian.PutUint32(b[4:], r.Offset)
	binary.LittleEndian.PutUint32(b[8:], r.Length)
	return b
}

// compactBackup is dog's compact_obj_backup: the range of to that differs
// from from, trimmed by whole 512-byte sectors equal at the head and at the
// tail. Both are one object long. An unchanged object gives length 0.
func compactBackup(to, from []byte) (offset, length uint32) {
	size := uint32(len(to))
	length = size
	for length > 0 && bytes.Equal(to[offset:offset+backupSector], from[offset:offset+backupSector]) {
		offset += backupSector
		length -= backupSector
	}
	for end := size; length > 0 && bytes.Equal(to[end-backupSector:end], from[end-backupSector:end]); end -= backupSector {
		length -= backupSector
	}
	return offset, length
}

// readSnapshotInode is read_vdi_obj for a snapshot named by id or tag.
func (s *session) readSnapshotInode(name string, snapID uint32, tag string) (*proto.Inode, error) {
	vid, err := s.openVdi(name, snapID, tag)
	if err != nil {
		return nil, err
	}
	ino, err := s.readInode(vid, true)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, err
		}
		return nil, failf(exitFailure, "%s", snapshotReadError(name, snapID, tag))
	}
	return ino, nil
}

// vdiBackup writes the difference between snapshot -F and snapshot -s of
// a VDI to stdout.
func vdiBackup(s *session, args []string) error {
	name := args[0]
	o := s.opts
	if (o.snapID == 0 && o.snapTag == "") || (o.snap.fromID == 0 && o.snap.fromTag == "") {
		return usagef("Please specify snapshots with '-F' and '-s' options")
	}
	from, err := s.readSnapshotInode(name, o.snap.fromID, o.snap.fromTag)
	if err != nil {
		return err
	}
	to, err := s.readSnapshotInode(name, o.snapID, o.snapTag)
	if err != nil {
		return err
	}
	objSize := uint32(1) << from.BlockSizeShift
	toData, fromData := make([]byte, objSize), make([]byte, objSize)
	s.out.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, backupVersion), backupMagic))
	for idx := range uint32(min(dataObjects(to), proto.MaxDataIndexes)) {
		fromVid, toVid := owner(from, uint64(idx)), owner(to, uint64(idx))
		if fromVid == toVid {
			continue // shared (or absent in both): no difference
		}
		for _, p := range []struct {
			vid uint32
			buf []byte
		}{{toVid, toData}, {fromVid, fromData}} {
			if p.vid == 0 {
				clear(p.buf)
				continue
			}
			if err := s.readObj(proto.VidToDataOid(p.vid, idx), 0, p.buf, true); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return failf(exitFailure, "Failed to read object %x, %d", p.vid, idx)
			}
		}
		off, n := compactBackup(toData, fromData)
		if n == 0 {
			continue
		}
		s.out.Write(backupRecord{Idx: idx, Offset: off, Length: n}.marshal())
		s.out.Write(toData[off : off+n])
	}
	s.out.Write(backupRecord{Idx: backupEnd}.marshal())
	if err := s.out.Flush(); err != nil {
		return failf(exitSysfail, "failed to write backup data, %v", err)
	}
	return nil
}

// vdiRestore applies a backup stream from stdin onto snapshot -s: the
// working VDI is deleted, a VDI based on the snapshot receives the
// stream's ranges (copy-on-write from the snapshot's objects), and a
// snapshot request then makes it a snapshot, with a new working VDI based
// on the old working VDI's parent, as dog's vdi restore does.
func vdiRestore(s *session, args []string) error {
	name := args[0]
	o := s.opts
	if o.snapID == 0 && o.snapTag == "" {
		s.report(errors.New("We can restore a backup file only to snapshots"))
		return usagef("Please specify the '-s' option")
	}
	if _, err := s.readSnapshotInode(name, o.snapID, o.snapTag); err != nil {
		s.report(err)
		return failf(exitFailure, "Snapshot ID %d or tag %s doesn't exist", o.snapID, o.snapTag)
	}
	curVid, err := s.openVdi(name, 0, "")
	if err != nil {
		return err
	}
	cur, err := s.readInode(curVid, false)
	if err != nil {
		return failf(exitFailure, "%s: %v", snapshotReadError(name, 0, ""), err)
	}
	if _, err := s.readInode(cur.ParentVdiID, false); err != nil {
		s.out.WriteString("error\n")
		return &exitError{code: exitFailure}
	}
	if isTerminal(s.stdin) {
		return usagef("stdin must be pipe")
	}
	if err := s.deleteVdi(name, 0, ""); err != nil {
		s.report(err)
		return failf(exitFailure, "Failed to delete the current state")
	}
	restoreErr := s.restore(name)
	// Recreate the working VDI: the restored one becomes a snapshot.
	if _, err := s.newVdi(name, cur.VdiSize, cur.ParentVdiID, true, cur.NrCopies, cur.CopyPolicy,
		cur.StorePolicy, cur.BlockSizeShift); err != nil {
		s.report(err)
		return failf(exitFailure, "failed to resume the current vdi")
	}
	return restoreErr
}

// restore is dog's do_restore: check the stream header, create a VDI
// based on the snapshot and write every record into it.
func (s *session) restore(name string) error {
	o := s.opts
	hdr := make([]byte, backupHeaderLen)
	if _, err := io.ReadFull(s.stdin, hdr); err != nil {
		s.report(failf(exitSysfail, "failed to read backup header, %v", err))
	}
	if binary.LittleEndian.Uint32(hdr) != backupVersion || binary.LittleEndian.Uint32(hdr[4:]) != backupMagic {
		return failf(exitSysfail, "The backup file is corrupted")
	}
	snap, err := s.readSnapshotInode(name, o.snapID, o.snapTag)
	if err != nil {
		return err
	}
	vid, err := s.newVdi(name, snap.VdiSize, snap.VdiID, false, snap.NrCopies, snap.CopyPolicy, snap.StorePolicy, snap.BlockSizeShift)
	if err != nil {
		s.report(err)
		return failf(exitFailure, "Failed to read VDI")
	}
	objSize := uint32(1) << snap.BlockSizeShift
	rec := make([]byte, backupRecSize)
	data := make([]byte, objSize)
	for {
		if _, err := io.ReadFull(s.stdin, rec); err != nil {
			return failf(exitSysfail, "failed to read backup data")
		}
		r := backupRecord{Idx: binary.LittleEndian.Uint32(rec), Offset: binary.LittleEndian.Uint32(rec[4:]),
			Length: binary.LittleEndian.Uint32(rec[8:])}
		if r.Idx == backupEnd {
			return nil
		}
		if uint64(r.Offset)+uint64(r.Length) > uint64(objSize) || uint64(r.Idx) >= dataObjects(snap) {
			return failf(exitSysfail, "failed to read backup data")
		}
		if _, err := io.ReadFull(s.stdin, data[:r.Length]); err != nil {
			return failf(exitSysfail, "failed to read backup data")
		}
		if err := s.restoreObject(snap, vid, r, data[:r.Length]); err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			s.report(failf(exitFailure, "failed to restore backup"))
			s.deleteVdi(name, 0, "")
			return &exitError{code: exitFailure}
		}
	}
}

// restoreObject is dog's restore_obj: a copy-on-write create of object idx
// of vid from the snapshot's object, then the table entry.
func (s *session) restoreObject(snap *proto.Inode, vid uint32, r backupRecord, data []byte) error {
	req := proto.NewRequest(proto.OpCreateAndWriteObj)
	req.Flags |= proto.FlagCmdDirect
	args := proto.ObjArgs{Oid: proto.VidToDataOid(vid, r.Idx), Offset: r.Offset, Copies: snap.NrCopies, CopyPolicy: snap.CopyPolicy}
	if parent := owner(snap, uint64(r.Idx)); parent != 0 {
		req.Flags |= proto.FlagCmdCow
		args.CowOid = proto.VidToDataOid(parent, r.Idx)
	}
	req.SetObj(args)
	rsp, _, err := s.do(&req, data, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return rsp.Result
	}
	return s.writeObj(proto.VidToVdiOid(vid), binary.LittleEndian.AppendUint32(nil, vid),
		proto.DataVdiIDOff(r.Idx), snap.NrCopies, snap.CopyPolicy, false, true)
}
