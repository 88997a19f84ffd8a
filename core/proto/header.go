package proto

import (
	"encoding/binary"
	"errors"
)

var le = binary.LittleEndian

// HeaderSize is the size of both sd_req and sd_rsp.
const HeaderSize = 48

// Protocol versions (§1.4).
const (
	ProtoVer      = 0x02 // public ops (opcode < 0x80)
	SheepProtoVer = 0x0a // internal ops (opcode >= 0x80)
)

// Opcode is hdr.opcode.
type Opcode uint8

// Opcodes (§2). Wire values: never renumber.
const (
	OpCreateAndWriteObj Opcode = 0x01
	OpReadObj           Opcode = 0x02
	OpWriteObj          Opcode = 0x03
	OpRemoveObj         Opcode = 0x04
	OpDiscardObj        Opcode = 0x05

	OpNewVdi            Opcode = 0x11
	OpLockVdi           Opcode = 0x12
	OpReleaseVdi        Opcode = 0x13
	OpGetVdiInfo        Opcode = 0x14
	OpReadVdis          Opcode = 0x15
	OpFlushVdi          Opcode = 0x16
	OpDelVdi            Opcode = 0x17
	OpGetClusterDefault Opcode = 0x18

	OpGetNodeList        Opcode = 0x82
	OpMakeFS             Opcode = 0x84
	OpShutdown           Opcode = 0x85
	OpStatSheep          Opcode = 0x86
	OpStatCluster        Opcode = 0x87
	OpGetVdiAttr         Opcode = 0x89
	OpForceRecover       Opcode = 0x8A
	OpGetStoreList       Opcode = 0x90
	OpSnapshot           Opcode = 0x91
	OpRestore            Opcode = 0x92
	OpGetSnapFile        Opcode = 0x93
	OpCleanup            Opcode = 0x94
	OpTraceStatus        Opcode = 0x95
	OpTraceReadBuf       Opcode = 0x96
	OpStatRecovery       Opcode = 0x97
	OpFlushDelCache      Opcode = 0x98
	OpNotifyVdiDel       Opcode = 0x99
	OpKillNode           Opcode = 0x9A
	OpTraceEnable        Opcode = 0x9B
	OpTraceDisable       Opcode = 0x9C
	OpGetObjList         Opcode = 0xA1
	OpGetEpoch           Opcode = 0xA2
	OpCreateAndWritePeer Opcode = 0xA3
	OpReadPeer           Opcode = 0xA4
	OpWritePeer          Opcode = 0xA5
	OpRemovePeer         Opcode = 0xA6
	OpEnableRecover      Opcode = 0xA8
	OpDisableRecover     Opcode = 0xA9
	OpGetVdiCopies       Opcode = 0xAB
	OpCompleteRecovery   Opcode = 0xAC
	OpFlushNodes         Opcode = 0xAD
	OpFlushPeer          Opcode = 0xAE
	OpNotifyVdiAdd       Opcode = 0xAF
	OpDeleteCache        Opcode = 0xB0
	OpMdInfo             Opcode = 0xB1
	OpMdPlug             Opcode = 0xB2
	OpMdUnplug           Opcode = 0xB3
	OpGetHash            Opcode = 0xB4
	OpReweight           Opcode = 0xB5
	OpGetCacheInfo       Opcode = 0xB6
	OpCachePurge         Opcode = 0xB7
	OpStat               Opcode = 0xB8
	OpGetLoglevel        Opcode = 0xB9
	OpSetLoglevel        Opcode = 0xBA
	OpNfsCreate          Opcode = 0xBB
	OpNfsDelete          Opcode = 0xBC
	OpExist              Opcode = 0xBD
	OpClusterInfo        Opcode = 0xBE
	OpAlterClusterCopy   Opcode = 0xBF
	OpAlterVdiCopy       Opcode = 0xC0
	OpDecrefObj          Opcode = 0xC1
	OpDecrefPeer         Opcode = 0xC2
	OpPreventInodeUpdate Opcode = 0xC3
	OpAllowInodeUpdate   Opcode = 0xC4
	OpRepairReplica      Opcode = 0xC5
	OpOidsExist          Opcode = 0xC6
	OpVdiStateCheckpoint Opcode = 0xC7
	OpInodeCoherence     Opcode = 0xC8
	OpReadDelVdis        Opcode = 0xC9
	OpGetRecovery        Opcode = 0xCA
	OpSetRecovery        Opcode = 0xCB
	OpSetVnodes          Opcode = 0xCC
	OpGetVnodes          Opcode = 0xCD
)

// OpPunchPeer is our peer op, not Sheepdog's: it makes [offset,
// offset+length) of obj.oid read as zeros on the receiving node's copy
// alone, punching a hole where the filesystem can. The WRITE payload is
// the length, 8 bytes little-endian. A node that predates it answers
// INVALID_PARMS (unknown opcode); the gateway then writes zeros to that
// copy instead. Our internal ops sit at 0xF0 and up, above Sheepdog's
// (0xF0 is OpClusterPropose).
const OpPunchPeer Opcode = 0xF1

// Internal reports whether the opcode is a sheep-internal one (proto 0x0a).
func (o Opcode) Internal() bool { return o >= 0x80 }

// PeerOp is the opcode a gateway forwards to one replica (01→A3, 02→A4,
// 03→A5, 04→A6, C1→C2); other opcodes map to themselves.
func (o Opcode) PeerOp() Opcode {
	switch o {
	case OpCreateAndWriteObj:
		return OpCreateAndWritePeer
	case OpReadObj:
		return OpReadPeer
	case OpWriteObj:
		return OpWritePeer
	case OpRemoveObj:
		return OpRemovePeer
	case OpDecrefObj:
		return OpDecrefPeer
	}
	return o
}

// Flags of hdr.flags (§1.5).
const (
	FlagCmdWrite     uint16 = 0x01
	FlagCmdCow       uint16 = 0x02
	FlagCmdCache     uint16 = 0x04
	FlagCmdDirect    uint16 = 0x08
	FlagCmdPiggyback uint16 = 0x10
	FlagCmdTgt       uint16 = 0x20
	FlagCmdFwd       uint16 = 0x40
	FlagCmdRecovery  uint16 = 0x80
	FlagCmdWildcard  uint16 = 0x100
	FlagCmdCreat     uint16 = 0x100
	FlagCmdExcl      uint16 = 0x200
	FlagCmdDel       uint16 = 0x400
)

// Request is struct sd_req. Arg is the 32-byte op-specific union at offset
// 16; the typed views (Obj, Vdi, Cluster, ...) read and write it.
type Request struct {
	ProtoVer   uint8
	Opcode     Opcode
	Flags      uint16
	Epoch      uint32
	ID         uint32
	DataLength uint32
	Arg        [32]byte
}

// Response is struct sd_rsp. Arg is the 28-byte op-specific union at
// offset 20.
type Response struct {
	ProtoVer   uint8
	Opcode     Opcode
	Flags      uint16
	Epoch      uint32
	ID         uint32
	DataLength uint32
	Result     Result
	Arg        [28]byte
}

// ErrShortHeader is returned when fewer than HeaderSize bytes are decoded.
var ErrShortHeader = errors.New("proto: header shorter than 48 bytes")

// NewRequest returns a request with the proto_ver clients send for op.
func NewRequest(op Opcode) Request {
	r := Request{Opcode: op, ProtoVer: ProtoVer}
	if op.Internal() {
		r.ProtoVer = SheepProtoVer
	}
	return r
}

// Marshal writes the 48-byte header into b, which must hold HeaderSize bytes.
func (r *Request) Marshal(b []byte) {
	_ = b[HeaderSize-1]
	b[0] = r.ProtoVer
	b[1] = byte(r.Opcode)
	le.PutUint16(b[2:], r.Flags)
	le.PutUint32(b[4:], r.Epoch)
	le.PutUint32(b[8:], r.ID)
	le.PutUint32(b[12:], r.DataLength)
	copy(b[16:48], r.Arg[:])
}

// Unmarshal reads a 48-byte header from b.
func (r *Request) Unmarshal(b []byte) error {
	if len(b) < HeaderSize {
		return ErrShortHeader
	}
	r.ProtoVer = b[0]
	r.Opcode = Opcode(b[1])
	r.Flags = le.Uint16(b[2:])
	r.Epoch = le.Uint32(b[4:])
	r.ID = le.Uint32(b[8:])
	r.DataLength = le.Uint32(b[12:])
	copy(r.Arg[:], b[16:48])
	return nil
}

// Marshal writes the 48-byte header into b, which must hold HeaderSize bytes.
func (r *Response) Marshal(b []byte) {
	_ = b[HeaderSize-1]
	b[0] = r.ProtoVer
	b[1] = byte(r.Opcode)
	le.PutUint16(b[2:], r.Flags)
	le.PutUint32(b[4:], r.Epoch)
	le.PutUint32(b[8:], r.ID)
	le.PutUint32(b[12:], r.DataLength)
	le.PutUint32(b[16:], uint32(r.Result))
	copy(b[20:48], r.Arg[:])
}

// Unmarshal reads a 48-byte header from b.
func (r *Response) Unmarshal(b []byte) error {
	if len(b) < HeaderSize {
		return ErrShortHeader
	}
	r.ProtoVer = b[0]
	r.Opcode = Opcode(b[1])
	r.Flags = le.Uint16(b[2:])
	r.Epoch = le.Uint32(b[4:])
	r.ID = le.Uint32(b[8:])
	r.DataLength = le.Uint32(b[12:])
	r.Result = Result(le.Uint32(b[16:]))
	copy(r.Arg[:], b[20:48])
	return nil
}

// ObjArgs is the obj variant of the request union (object I/O).
type ObjArgs struct {
	Oid        uint64 // @16
	CowOid     uint64 // @24
	Copies     uint8  // @32
	CopyPolicy uint8  // @33
	ECIndex    uint8  // @34
	TgtEpoch   uint32 // @36
	Offset     uint32 // @40 (QEMU declares a u64; offsets stay below 4 GiB)
}

// Obj decodes the obj variant.
func (r *Request) Obj() ObjArgs {
	a := r.Arg[:]
	return ObjArgs{
		Oid: le.Uint64(a[0:]), CowOid: le.Uint64(a[8:]), Copies: a[16], CopyPolicy: a[17],
		ECIndex: a[18], TgtEpoch: le.Uint32(a[20:]), Offset: le.Uint32(a[24:]),
	}
}

// SetObj encodes the obj variant.
func (r *Request) SetObj(o ObjArgs) {
	a := r.Arg[:]
	le.PutUint64(a[0:], o.Oid)
	le.PutUint64(a[8:], o.CowOid)
	a[16], a[17], a[18], a[19] = o.Copies, o.CopyPolicy, o.ECIndex, 0
	le.PutUint32(a[20:], o.TgtEpoch)
	le.PutUint32(a[24:], o.Offset)
	le.PutUint32(a[28:], 0)
}

// VdiArgs is the vdi variant of the request union.
type VdiArgs struct {
	VdiSize        uint64 // @16
	BaseVdiID      uint32 // @24
	Copies         uint8  // @28
	CopyPolicy     uint8  // @29
	StorePolicy    uint8  // @30
	BlockSizeShift uint8  // @31
	SnapID         uint32 // @32
	Type           uint32 // @36 lock type: 0 normal, 1 shared
}

// Vdi decodes the vdi variant.
func (r *Request) Vdi() VdiArgs {
	a := r.Arg[:]
	return VdiArgs{
		VdiSize: le.Uint64(a[0:]), BaseVdiID: le.Uint32(a[8:]), Copies: a[12], CopyPolicy: a[13],
		StorePolicy: a[14], BlockSizeShift: a[15], SnapID: le.Uint32(a[16:]), Type: le.Uint32(a[20:]),
	}
}

// SetVdi encodes the vdi variant.
func (r *Request) SetVdi(v VdiArgs) {
	a := r.Arg[:]
	le.PutUint64(a[0:], v.VdiSize)
	le.PutUint32(a[8:], v.BaseVdiID)
	a[12], a[13], a[14], a[15] = v.Copies, v.CopyPolicy, v.StorePolicy, v.BlockSizeShift
	le.PutUint32(a[16:], v.SnapID)
	le.PutUint32(a[20:], v.Type)
}

// ClusterArgs is the cluster variant of the request union.
type ClusterArgs struct {
	Oid            uint64 // @16
	Ctime          uint64 // @24
	Copies         uint8  // @32
	CopyPolicy     uint8  // @33
	Flags          uint16 // @34
	Tag            uint32 // @36
	NodesNr        uint32 // @40
	BlockSizeShift uint8  // @44
}

// Cluster decodes the cluster variant.
func (r *Request) Cluster() ClusterArgs {
	a := r.Arg[:]
	return ClusterArgs{
		Oid: le.Uint64(a[0:]), Ctime: le.Uint64(a[8:]), Copies: a[16], CopyPolicy: a[17],
		Flags: le.Uint16(a[18:]), Tag: le.Uint32(a[20:]), NodesNr: le.Uint32(a[24:]), BlockSizeShift: a[28],
	}
}

// SetCluster encodes the cluster variant.
func (r *Request) SetCluster(c ClusterArgs) {
	a := r.Arg[:]
	le.PutUint64(a[0:], c.Oid)
	le.PutUint64(a[8:], c.Ctime)
	a[16], a[17] = c.Copies, c.CopyPolicy
	le.PutUint16(a[18:], c.Flags)
	le.PutUint32(a[20:], c.Tag)
	le.PutUint32(a[24:], c.NodesNr)
	a[28] = c.BlockSizeShift
}

// VdiStateArgs is the vdi_state variant (NOTIFY_VDI_ADD, ALTER_VDI_COPY).
type VdiStateArgs struct {
	OldVid         uint32 // @16
	NewVid         uint32 // @20
	Copies         uint8  // @24
	SetBitmap      uint8  // @25
	CopyPolicy     uint8  // @26
	BlockSizeShift uint8  // @27
}

// VdiState decodes the vdi_state variant.
func (r *Request) VdiState() VdiStateArgs {
	a := r.Arg[:]
	return VdiStateArgs{OldVid: le.Uint32(a[0:]), NewVid: le.Uint32(a[4:]), Copies: a[8], SetBitmap: a[9], CopyPolicy: a[10], BlockSizeShift: a[11]}
}

// SetVdiState encodes the vdi_state variant.
func (r *Request) SetVdiState(v VdiStateArgs) {
	a := r.Arg[:]
	le.PutUint32(a[0:], v.OldVid)
	le.PutUint32(a[4:], v.NewVid)
	a[8], a[9], a[10], a[11] = v.Copies, v.SetBitmap, v.CopyPolicy, v.BlockSizeShift
}

// RefArgs is the ref variant (DECREF_OBJ/PEER).
type RefArgs struct {
	Oid        uint64 // @16, the ledger oid
	Generation uint32 // @24
	Count      uint32 // @28
}

// Ref decodes the ref variant.
func (r *Request) Ref() RefArgs {
	a := r.Arg[:]
	return RefArgs{Oid: le.Uint64(a[0:]), Generation: le.Uint32(a[8:]), Count: le.Uint32(a[12:])}
}

// SetRef encodes the ref variant.
func (r *Request) SetRef(v RefArgs) {
	a := r.Arg[:]
	le.PutUint64(a[0:], v.Oid)
	le.PutUint32(a[8:], v.Generation)
	le.PutUint32(a[12:], v.Count)
}

// ForwArgs is the forw variant (REPAIR_REPLICA).
type ForwArgs struct {
	Oid  uint64   // @16
	Addr [16]byte // @24
	Port uint16   // @40
}

// Forw decodes the forw variant.
func (r *Request) Forw() ForwArgs {
	a := r.Arg[:]
	var f ForwArgs
	f.Oid = le.Uint64(a[0:])
	copy(f.Addr[:], a[8:24])
	f.Port = le.Uint16(a[24:])
	return f
}

// SetForw encodes the forw variant.
func (r *Request) SetForw(f ForwArgs) {
	a := r.Arg[:]
	le.PutUint64(a[0:], f.Oid)
	copy(a[8:24], f.Addr[:])
	le.PutUint16(a[24:], f.Port)
}

// VdiRsp is the vdi variant of the response union.
type VdiRsp struct {
	VdiID          uint32 // @24
	AttrID         uint32 // @28
	Copies         uint8  // @32
	BlockSizeShift uint8  // @33
}

// Vdi decodes the vdi response variant.
func (r *Response) Vdi() VdiRsp {
	a := r.Arg[:]
	return VdiRsp{VdiID: le.Uint32(a[4:]), AttrID: le.Uint32(a[8:]), Copies: a[12], BlockSizeShift: a[13]}
}

// SetVdi encodes the vdi response variant.
func (r *Response) SetVdi(v VdiRsp) {
	a := r.Arg[:]
	le.PutUint32(a[4:], v.VdiID)
	le.PutUint32(a[8:], v.AttrID)
	a[12], a[13] = v.Copies, v.BlockSizeShift
}

// NodeRsp is the node variant of the response union.
type NodeRsp struct {
	NrNodes   uint32 // @20
	StoreSize uint64 // @32
	StoreFree uint64 // @40
}

// Node decodes the node response variant.
func (r *Response) Node() NodeRsp {
	a := r.Arg[:]
	return NodeRsp{NrNodes: le.Uint32(a[0:]), StoreSize: le.Uint64(a[12:]), StoreFree: le.Uint64(a[20:])}
}

// SetNode encodes the node response variant.
func (r *Response) SetNode(n NodeRsp) {
	a := r.Arg[:]
	le.PutUint32(a[0:], n.NrNodes)
	le.PutUint64(a[12:], n.StoreSize)
	le.PutUint64(a[20:], n.StoreFree)
}

// Hash returns the SHA-1 digest of a GET_HASH reply (@24).
func (r *Response) Hash() (d [20]byte) {
	copy(d[:], r.Arg[4:24])
	return d
}

// SetHash encodes the GET_HASH digest.
func (r *Response) SetHash(d [20]byte) { copy(r.Arg[4:24], d[:]) }

// ClusterDefaultRsp is the cluster_default variant of the response union.
type ClusterDefaultRsp struct {
	NrCopies       uint8 // @20
	CopyPolicy     uint8 // @21
	BlockSizeShift uint8 // @22
}

// ClusterDefault decodes the cluster_default response variant.
func (r *Response) ClusterDefault() ClusterDefaultRsp {
	return ClusterDefaultRsp{NrCopies: r.Arg[0], CopyPolicy: r.Arg[1], BlockSizeShift: r.Arg[2]}
}

// SetClusterDefault encodes the cluster_default response variant.
func (r *Response) SetClusterDefault(c ClusterDefaultRsp) {
	r.Arg[0], r.Arg[1], r.Arg[2] = c.NrCopies, c.CopyPolicy, c.BlockSizeShift
}
