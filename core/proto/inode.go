package proto

import (
	"bytes"
	"fmt"
	"time"
)

// Gref is one entry of the inode's gref[] table (generational reference
// counting, §4.7).
type Gref struct {
	Generation int32
	Count      int32
}

// Inode is struct sd_inode (§3.2). DataVdiID and Gref may be nil when only
// the header was decoded; otherwise they hold MaxDataIndexes entries.
type Inode struct {
	Name           string
	Tag            string
	CreateTime     uint64 // sec<<32 | nsec
	SnapCtime      uint64 // nonzero ⇔ snapshot
	VMClockNsec    uint64
	VdiSize        uint64
	VMStateSize    uint64
	CopyPolicy     uint8
	StorePolicy    uint8
	NrCopies       uint8
	BlockSizeShift uint8
	SnapID         uint32
	VdiID          uint32
	ParentVdiID    uint32
	BtreeCounter   uint32
	DataVdiID      []uint32
	Gref           []Gref
}

// Inode header offsets.
const (
	inodeOffTag          = 256
	inodeOffCreateTime   = 512
	inodeOffSnapCtime    = 520
	inodeOffVMClock      = 528
	inodeOffVdiSize      = 536
	inodeOffVMStateSize  = 544
	inodeOffCopyPolicy   = 552
	inodeOffStorePolicy  = 553
	inodeOffNrCopies     = 554
	inodeOffBlockShift   = 555
	inodeOffSnapID       = 556
	inodeOffVdiID        = 560
	inodeOffParentVdiID  = 564
	inodeOffBtreeCounter = 568
	// InodeTagOffset is where dog writes a snapshot tag.
	InodeTagOffset = inodeOffTag
	// InodeVdiSizeOffset is the offset of vdi_size (resize rewrites it).
	InodeVdiSizeOffset = inodeOffVdiSize
	// InodeNrCopiesOffset is the offset of nr_copies (alter-copy
	// rewrites it).
	InodeNrCopiesOffset = inodeOffNrCopies
	// InodeStorePolicyOffset is the offset of store_policy.
	InodeStorePolicyOffset = inodeOffStorePolicy
)

// DataVdiIDOff is the byte offset of data_vdi_id[idx] in the inode object.
func DataVdiIDOff(idx uint32) uint32 { return DataVdiIDOffset + 4*idx }

// SheepTime encodes t the way create_time, snap_ctime and ctime are kept:
// seconds in the high 32 bits, microseconds*1000 in the low 32 bits.
func SheepTime(t time.Time) uint64 {
	return uint64(t.Unix())<<32 | uint64(t.Nanosecond()/1000*1000)
}

// SheepTimeSeconds returns the seconds part of a SheepTime value.
func SheepTimeSeconds(v uint64) int64 { return int64(v >> 32) }

// IsSnapshot reports whether the inode is a snapshot.
func (ino *Inode) IsSnapshot() bool { return ino.SnapCtime != 0 }

// ObjectSize is the size of this VDI's data objects.
func (ino *Inode) ObjectSize() int64 {
	s := ino.BlockSizeShift
	if s == 0 {
		s = DefaultBlockSizeShift
	}
	return int64(1) << s
}

// putString writes s NUL-padded into b.
func putString(b []byte, s string) {
	n := copy(b, s)
	clear(b[n:])
}

// cString returns the bytes of b up to the first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// MarshalHeader writes the 4664-byte header into b.
func (ino *Inode) MarshalHeader(b []byte) {
	_ = b[InodeHeaderSize-1]
	putString(b[0:256], ino.Name)
	putString(b[256:512], ino.Tag)
	le.PutUint64(b[inodeOffCreateTime:], ino.CreateTime)
	le.PutUint64(b[inodeOffSnapCtime:], ino.SnapCtime)
	le.PutUint64(b[inodeOffVMClock:], ino.VMClockNsec)
	le.PutUint64(b[inodeOffVdiSize:], ino.VdiSize)
	le.PutUint64(b[inodeOffVMStateSize:], ino.VMStateSize)
	b[inodeOffCopyPolicy] = ino.CopyPolicy
	b[inodeOffStorePolicy] = ino.StorePolicy
	b[inodeOffNrCopies] = ino.NrCopies
	b[inodeOffBlockShift] = ino.BlockSizeShift
	le.PutUint32(b[inodeOffSnapID:], ino.SnapID)
	le.PutUint32(b[inodeOffVdiID:], ino.VdiID)
	le.PutUint32(b[inodeOffParentVdiID:], ino.ParentVdiID)
	le.PutUint32(b[inodeOffBtreeCounter:], ino.BtreeCounter)
	clear(b[572:InodeHeaderSize])
}

// UnmarshalHeader decodes the header fields from b, which must hold at least
// the first 572 bytes (the fields dog and sheep read while probing).
func (ino *Inode) UnmarshalHeader(b []byte) error {
	if len(b) < 572 {
		return fmt.Errorf("proto: inode header needs 572 bytes, got %d", len(b))
	}
	ino.Name = cString(b[0:256])
	ino.Tag = cString(b[256:512])
	ino.CreateTime = le.Uint64(b[inodeOffCreateTime:])
	ino.SnapCtime = le.Uint64(b[inodeOffSnapCtime:])
	ino.VMClockNsec = le.Uint64(b[inodeOffVMClock:])
	ino.VdiSize = le.Uint64(b[inodeOffVdiSize:])
	ino.VMStateSize = le.Uint64(b[inodeOffVMStateSize:])
	ino.CopyPolicy = b[inodeOffCopyPolicy]
	ino.StorePolicy = b[inodeOffStorePolicy]
	ino.NrCopies = b[inodeOffNrCopies]
	ino.BlockSizeShift = b[inodeOffBlockShift]
	ino.SnapID = le.Uint32(b[inodeOffSnapID:])
	ino.VdiID = le.Uint32(b[inodeOffVdiID:])
	ino.ParentVdiID = le.Uint32(b[inodeOffParentVdiID:])
	ino.BtreeCounter = le.Uint32(b[inodeOffBtreeCounter:])
	return nil
}

// inodeRangeOK reports whether [off, off+n) lies inside the inode image.
// It is written so that off+n cannot overflow for any off.
func inodeRangeOK(off int64, n int) bool {
	return off >= 0 && off <= InodeSize && int64(n) <= InodeSize-off
}

// MarshalRange writes bytes [off, off+len(dst)) of the full 12587576-byte
// inode image into dst. Nil DataVdiID or Gref tables encode as zeros.
func (ino *Inode) MarshalRange(off int64, dst []byte) error {
	if !inodeRangeOK(off, len(dst)) {
		return fmt.Errorf("proto: inode range [%d,+%d) outside %d bytes", off, len(dst), InodeSize)
	}
	end := off + int64(len(dst))
	if off < InodeHeaderSize {
		var h [InodeHeaderSize]byte
		ino.MarshalHeader(h[:])
		copy(dst, h[off:min(end, InodeHeaderSize)])
	}
	if lo, hi := max(off, DataVdiIDOffset), min(end, GrefOffset); lo < hi {
		out := dst[lo-off : hi-off]
		switch {
		case ino.DataVdiID == nil:
			clear(out)
		case nativeLE:
			copy(out, u32Bytes(ino.DataVdiID)[lo-DataVdiIDOffset:])
		default:
			for p := lo; p < hi; {
				i := (p - DataVdiIDOffset) / 4
				var e [4]byte
				le.PutUint32(e[:], ino.DataVdiID[i])
				p += int64(copy(dst[p-off:hi-off], e[(p-DataVdiIDOffset)%4:]))
			}
		}
	}
	if lo := max(off, GrefOffset); lo < end {
		out := dst[lo-off:]
		switch {
		case ino.Gref == nil:
			clear(out)
		case nativeLE:
			copy(out, grefBytes(ino.Gref)[lo-GrefOffset:])
		default:
			for p := lo; p < end; {
				i := (p - GrefOffset) / 8
				var e [8]byte
				le.PutUint32(e[0:], uint32(ino.Gref[i].Generation))
				le.PutUint32(e[4:], uint32(ino.Gref[i].Count))
				p += int64(copy(dst[p-off:], e[(p-GrefOffset)%8:]))
			}
		}
	}
	return nil
}

// UnmarshalRange applies bytes src, found at offset off of the full inode
// image, to ino. Tables are allocated on first touch. A range that starts
// inside the header must cover the whole header fields it touches; partial
// header updates are applied by re-encoding the header, patching and
// decoding it again.
func (ino *Inode) UnmarshalRange(off int64, src []byte) error {
	if !inodeRangeOK(off, len(src)) {
		return fmt.Errorf("proto: inode range [%d,+%d) outside %d bytes", off, len(src), InodeSize)
	}
	end := off + int64(len(src))
	if off < InodeHeaderSize {
		var h [InodeHeaderSize]byte
		ino.MarshalHeader(h[:])
		copy(h[off:min(end, InodeHeaderSize)], src)
		if err := ino.UnmarshalHeader(h[:]); err != nil {
			return err
		}
	}
	// Allocate a table only when the range really covers part of it: an
	// empty range must not turn "tables not decoded" into "all zero".
	if max(off, DataVdiIDOffset) < min(end, GrefOffset) {
		if ino.DataVdiID == nil {
			ino.DataVdiID = make([]uint32, MaxDataIndexes)
		}
		lo, hi := max(off, DataVdiIDOffset), min(end, GrefOffset)
		if nativeLE {
			copy(u32Bytes(ino.DataVdiID)[lo-DataVdiIDOffset:], src[lo-off:hi-off])
		} else {
			for p := lo; p < hi; {
				i := (p - DataVdiIDOffset) / 4
				var e [4]byte
				le.PutUint32(e[:], ino.DataVdiID[i])
				p += int64(copy(e[(p-DataVdiIDOffset)%4:], src[p-off:hi-off]))
				ino.DataVdiID[i] = le.Uint32(e[:])
			}
		}
	}
	if lo := max(off, GrefOffset); lo < end {
		if ino.Gref == nil {
			ino.Gref = make([]Gref, MaxDataIndexes)
		}
		if nativeLE {
			copy(grefBytes(ino.Gref)[lo-GrefOffset:], src[lo-off:])
		} else {
			for p := lo; p < end; {
				i := (p - GrefOffset) / 8
				var e [8]byte
				le.PutUint32(e[0:], uint32(ino.Gref[i].Generation))
				le.PutUint32(e[4:], uint32(ino.Gref[i].Count))
				p += int64(copy(e[(p-GrefOffset)%8:], src[p-off:]))
				ino.Gref[i] = Gref{Generation: int32(le.Uint32(e[0:])), Count: int32(le.Uint32(e[4:]))}
			}
		}
	}
	return nil
}
