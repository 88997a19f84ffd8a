package proto

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// The layout of struct sd_md_info, MD_INFO's (0xB1) reply: MdMaxDisks
// entries of struct md_info {int idx; (4 bytes of padding) u64 free; u64
// used; char path[PATH_MAX]}, then int nr, padded to 8 bytes.
const (
	MdMaxDisks  = 64
	mdPathMax   = 4096
	mdEntrySize = 8 + 8 + 8 + mdPathMax // 4120
	// MdInfoSize is the whole reply, 263688 bytes; dog asks for exactly
	// this much.
	MdInfoSize = MdMaxDisks*mdEntrySize + 8
)

// MdDisk is one disk of a node in MD_INFO: its index in the node's disk
// order, the bytes free on its filesystem, the bytes its objects take,
// and its object directory.
type MdDisk struct {
	Index int32
	Free  uint64
	Used  uint64
	Path  string
}

// MarshalMdInfo encodes disks as struct sd_md_info: at most MdMaxDisks of
// them, paths cut to PATH_MAX-1 bytes (NUL-terminated).
func MarshalMdInfo(disks []MdDisk) []byte {
	b := make([]byte, MdInfoSize)
	n := min(len(disks), MdMaxDisks)
	for i, d := range disks[:n] {
		e := b[i*mdEntrySize:]
		binary.LittleEndian.PutUint32(e[0:], uint32(d.Index))
		binary.LittleEndian.PutUint64(e[8:], d.Free)
		binary.LittleEndian.PutUint64(e[16:], d.Used)
		copy(e[24:24+mdPathMax-1], d.Path)
	}
	binary.LittleEndian.PutUint32(b[MdMaxDisks*mdEntrySize:], uint32(n))
	return b
}

// UnmarshalMdInfo decodes struct sd_md_info. A short buffer, a count
// outside 0..MdMaxDisks or a path without its NUL is an error.
func UnmarshalMdInfo(b []byte) ([]MdDisk, error) {
	if len(b) < MdInfoSize {
		return nil, fmt.Errorf("md info of %d bytes, want %d", len(b), MdInfoSize)
	}
	n := int32(binary.LittleEndian.Uint32(b[MdMaxDisks*mdEntrySize:]))
	if n < 0 || n > MdMaxDisks {
		return nil, fmt.Errorf("md info lists %d disks, at most %d", n, MdMaxDisks)
	}
	out := make([]MdDisk, n)
	for i := range out {
		e := b[i*mdEntrySize:]
		path := e[24 : 24+mdPathMax]
		j := bytes.IndexByte(path, 0)
		if j < 0 {
			return nil, fmt.Errorf("md info: path of disk %d is not NUL-terminated", i)
		}
		path = path[:j]
		out[i] = MdDisk{
			Index: int32(binary.LittleEndian.Uint32(e[0:])),
			Free:  binary.LittleEndian.Uint64(e[8:]),
			Used:  binary.LittleEndian.Uint64(e[16:]),
			Path:  string(path),
		}
	}
	return out, nil
}
