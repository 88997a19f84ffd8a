package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// readBitmap fetches one of the 2 MiB VID bitmaps (READ_VDIS or
// READ_DEL_VDIS).
func (s *session) readBitmap(op proto.Opcode) ([]byte, error) {
	req := proto.NewRequest(op)
	buf := make([]byte, proto.NrVdis/8)
	rsp, _, err := s.do(&req, nil, buf)
	if err != nil {
		return nil, err
	}
	if rsp.Result != proto.ResSuccess {
		return nil, failf(exitFailure, "%s", rsp.Result)
	}
	return buf, nil
}

// liveVids is the ascending list of vids in use and not deleted.
func (s *session) liveVids() ([]uint32, error) {
	inuse, err := s.readBitmap(proto.OpReadVdis)
	if err != nil {
		return nil, err
	}
	deleted, err := s.readBitmap(proto.OpReadDelVdis)
	if err != nil {
		return nil, err
	}
	var vids []uint32
	for w := 0; w < len(inuse); w += 8 {
		word := binary.LittleEndian.Uint64(inuse[w:]) &^ binary.LittleEndian.Uint64(deleted[w:])
		for word != 0 {
			b := bits.TrailingZeros64(word)
			vids = append(vids, uint32(w*8+b))
			word &= word - 1
		}
	}
	return vids, nil
}

// inodeScan is what parse_vdi learns about one vid.
type inodeScan struct {
	ino         *proto.Inode // nil: deleted, filtered out or unreadable
	own, shared uint64       // data objects owned and shared
	hasOid      bool         // data_vdi_id[oid index] == oid's vid (vdi list -o)
	errMsg      string       // why the inode could not be read
}

// tally counts a data_vdi_id entry v of ino: its own object, one shared
// with an ancestor, or none.
func (r *inodeScan) tally(ino *proto.Inode, v uint32) {
	switch v {
	case 0:
	case ino.VdiID:
		r.own++
	default:
		r.shared++
	}
}

// scanVdis is dog's parse_vdi: the header of every live VDI (and, with
// table, the data_vdi_id entries covering it), read in parallel and
// returned in vid order. Inodes with an empty name (deleted) are skipped;
// so are names other than only, when only is set.
func (s *session) scanVdis(table bool, only string, oid uint64) ([]inodeScan, error) {
	vids, err := s.liveVids()
	if err != nil {
		return nil, err
	}
	out := make([]inodeScan, len(vids))
	err = parallel(uint64(len(vids)), 16, func(i uint64) error {
		r := &out[i]
		vid := vids[i]
		buf := make([]byte, inodeReadSize)
		if err := s.readObj(proto.VidToVdiOid(vid), 0, buf, true); err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err // transport failure
			}
			r.errMsg = fmt.Sprintf("Failed to read inode header of %x: %v", vid, err)
			return nil
		}
		ino := &proto.Inode{}
		if err := ino.UnmarshalHeader(buf); err != nil || ino.Name == "" {
			return nil
		}
		if only != "" && ino.Name != only {
			return nil
		}
		if table && ino.StorePolicy == 0 {
			if err := s.readTable(ino); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				r.errMsg = fmt.Sprintf("Failed to read inode of %x: %v", vid, err)
				return nil
			}
			n := min(dataObjects(ino), proto.MaxDataIndexes)
			for _, v := range ino.DataVdiID[:n] {
				r.tally(ino, v)
			}
			if oid != 0 {
				idx := proto.DataIndex(oid)
				r.hasOid = idx < proto.MaxDataIndexes && ino.DataVdiID[idx] != 0 && ino.DataVdiID[idx] == proto.OidToVid(oid)
			}
			ino.DataVdiID = nil // keep only the counts
		} else if table {
			tree, err := s.readTree(ino)
			if err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				r.errMsg = fmt.Sprintf("Failed to read inode of %x: %v", vid, err)
				return nil
			}
			tree.Walk(func(_, v uint32) { r.tally(ino, v) })
			if oid != 0 {
				v := tree.Get(proto.DataIndex(oid))
				r.hasOid = v != 0 && v == proto.OidToVid(oid)
			}
		}
		r.ino = ino
		return nil
	})
	return out, err
}

func vdiList(s *session, args []string) error {
	o := s.opts
	var only string
	if len(args) > 0 {
		only = args[0]
	}
	oid := o.oid
	if only != "" {
		oid = 0 // a name wins over -o, as in dog
	} else if oid != 0 && !proto.IsDataObj(oid) {
		return failf(exitFailure, "%016x is not a data object id", oid)
	}
	scans, err := s.scanVdis(true, only, oid)
	if err != nil {
		return err
	}
	if !o.raw {
		s.out.WriteString(vdiListHeader)
	}
	unreadable := 0
	for _, r := range scans {
		if r.errMsg != "" {
			s.out.Flush()
			fmt.Fprintln(s.stderr, r.errMsg)
			unreadable++
			continue
		}
		if r.ino == nil || (oid != 0 && !r.hasOid) {
			continue
		}
		s.out.WriteString(formatVdiRow(newVdiRow(r.ino, r.own, r.shared), o.raw, time.Local))
	}
	if unreadable > 0 {
		return &exitError{code: exitFailure}
	}
	return nil
}
