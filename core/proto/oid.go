package proto

// Object id layout (§3.1): bits 0–31 data index, 32–55 vid, 60–63 type bits.
const (
	VdiBit      uint64 = 1 << 63
	VmstateBit  uint64 = 1 << 62
	VdiAttrBit  uint64 = 1 << 61
	VdiBtreeBit uint64 = 1 << 60
	LedgerBit   uint64 = 1 << 59

	VdiSpaceShift        = 32
	VdiMask       uint64 = 0x00FFFFFF00000000
	NrVdis               = 1 << 24
	MaxDataObjs          = 1 << 32
	// MaxDataIndexes is the number of data_vdi_id entries of a flat inode.
	MaxDataIndexes = 1 << 20
)

// Sizes and limits (§3.1, §3.2).
const (
	InodeSize                    = 12587576
	InodeHeaderSize              = 4664 // offset of data_vdi_id
	DataVdiIDOffset              = InodeHeaderSize
	GrefOffset                   = DataVdiIDOffset + 4*MaxDataIndexes // 4198968
	AttrSize                     = 66320
	DefaultBlockSizeShift        = 22
	MinBlockSizeShift            = 20
	MaxBlockSizeShift            = 31
	DataObjSize                  = 1 << DefaultBlockSizeShift
	MaxVdiLen                    = 256
	MaxVdiTagLen                 = 256
	AttrKeyLen                   = 256
	AttrValueLen                 = 65536
	MaxCopies                    = 31
	DefaultCopies                = 3
	DefaultVnodes                = 128
	CurrentVdiID                 = 0
	MaxVdiSize            uint64 = DataObjSize << 32 // hyper volume limit, 2^54
)

// OldMaxVdiSize is the largest flat VDI for a block size shift: one object
// per data_vdi_id entry.
func OldMaxVdiSize(shift uint8) uint64 { return uint64(1) << shift * MaxDataIndexes }

// VidToVdiOid is the inode object id of vid.
func VidToVdiOid(vid uint32) uint64 { return VdiBit | uint64(vid)<<VdiSpaceShift }

// VidToDataOid is the id of data object idx of vid.
func VidToDataOid(vid uint32, idx uint32) uint64 { return uint64(vid)<<VdiSpaceShift | uint64(idx) }

// VidToVmstateOid is the id of vmstate object idx of vid.
func VidToVmstateOid(vid uint32, idx uint32) uint64 {
	return VmstateBit | uint64(vid)<<VdiSpaceShift | uint64(idx)
}

// VidToAttrOid is the id of attribute slot attrid of vid.
func VidToAttrOid(vid uint32, attrid uint32) uint64 {
	return uint64(vid)<<VdiSpaceShift | VdiAttrBit | uint64(attrid)
}

// VidToBtreeOid is the id of B-tree node n of a hyper volume.
func VidToBtreeOid(vid uint32, n uint32) uint64 {
	return uint64(vid)<<VdiSpaceShift | VdiBtreeBit | uint64(n)
}

// LedgerOid is the reference-count ledger of a data object.
func LedgerOid(oid uint64) uint64 { return LedgerBit | oid }

// OidToVid extracts the VDI id.
func OidToVid(oid uint64) uint32 { return uint32((oid & VdiMask) >> VdiSpaceShift) }

// DataIndex extracts the data index (low 32 bits).
func DataIndex(oid uint64) uint32 { return uint32(oid) }

// IsVdiObj reports whether oid is an inode object.
func IsVdiObj(oid uint64) bool { return oid&VdiBit != 0 }

// IsVmstateObj reports whether oid is a vmstate object.
func IsVmstateObj(oid uint64) bool { return oid&VmstateBit != 0 }

// IsAttrObj reports whether oid is an attribute object.
func IsAttrObj(oid uint64) bool { return oid&VdiAttrBit != 0 }

// IsBtreeObj reports whether oid is a B-tree node.
func IsBtreeObj(oid uint64) bool { return oid&VdiBtreeBit != 0 }

// IsLedgerObj reports whether oid is a ledger.
func IsLedgerObj(oid uint64) bool { return oid&LedgerBit != 0 }

// IsDataObj reports whether oid is a plain data object (no type bit).
func IsDataObj(oid uint64) bool { return oid&(0xF8<<56) == 0 }

// ObjectSize is the full size of the object oid for a VDI with the given
// block size shift.
func ObjectSize(oid uint64, shift uint8) int64 {
	switch {
	case IsVdiObj(oid):
		return InodeSize
	case IsAttrObj(oid):
		return AttrSize
	case IsBtreeObj(oid), IsLedgerObj(oid):
		return DataObjSize
	}
	if shift == 0 {
		shift = DefaultBlockSizeShift
	}
	return int64(1) << shift
}
