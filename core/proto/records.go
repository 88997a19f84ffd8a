package proto

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
)

// NodeSize is the wire size of struct sd_node.
const NodeSize = 80

// MaxNodes is SD_MAX_NODES for 80-byte nodes.
const MaxNodes = 6144

// NodeID is struct node_id: the identity of a sheep.
type NodeID struct {
	Addr   [16]byte // IPv4: 12 zero bytes + 4 address bytes
	Port   uint16
	IOAddr [16]byte
	IOPort uint16
}

// Node is struct sd_node (§5.1).
type Node struct {
	NodeID
	NrVnodes uint16
	Zone     uint32
	Space    uint64 // bytes of capacity; 0 = gateway
}

// NodeIDFromAddrPort builds a node id from an address; IPv4 addresses use
// Sheepdog's form (12 zero bytes, not ::ffff-mapped).
func NodeIDFromAddrPort(ap netip.AddrPort) NodeID {
	var id NodeID
	a := ap.Addr().Unmap()
	if a.Is4() {
		b := a.As4()
		copy(id.Addr[12:], b[:])
	} else {
		id.Addr = a.As16()
	}
	id.Port = ap.Port()
	return id
}

// IP returns the node's address. As in Sheepdog's addr_to_str, it is IPv4
// when the first 12 bytes are zero and byte 12 is not; so IPv6 addresses
// such as ::1 stay IPv6.
func (id NodeID) IP() netip.Addr {
	if id.Addr[12] != 0 && [12]byte(id.Addr[:12]) == [12]byte{} {
		return netip.AddrFrom4([4]byte(id.Addr[12:]))
	}
	return netip.AddrFrom16(id.Addr)
}

// String is the text form "a.b.c.d:port" (IPv6: "addr:port").
func (id NodeID) String() string {
	return id.IP().String() + ":" + strconv.Itoa(int(id.Port))
}

// DefaultZone is the zone of a node started without -z: the last 4 address
// bytes read as a little-endian u32 (127.0.0.1 → 0x0100007f).
func (id NodeID) DefaultZone() uint32 { return le.Uint32(id.Addr[12:]) }

// Compare orders nodes as Sheepdog does everywhere: memcmp of addr, then port.
func (id NodeID) Compare(o NodeID) int {
	if c := bytes.Compare(id.Addr[:], o.Addr[:]); c != 0 {
		return c
	}
	switch {
	case id.Port < o.Port:
		return -1
	case id.Port > o.Port:
		return 1
	}
	return 0
}

// Same reports whether id and o are the same sheep. A sheep is its
// address and port, the bytes the ring hashes (HashKey) and nodes are
// ordered by (Compare); the I/O address is a route to it, not part of who
// it is. Compare node identities with Same, never field by field.
func (id NodeID) Same(o NodeID) bool { return id.Addr == o.Addr && id.Port == o.Port }

// HashKey returns the 18 bytes (addr + LE port) the ring hashes.
func (id NodeID) HashKey() [18]byte {
	var b [18]byte
	copy(b[:16], id.Addr[:])
	le.PutUint16(b[16:], id.Port)
	return b
}

// Marshal writes the 80-byte sd_node into b (the rb field is zero).
func (n *Node) Marshal(b []byte) {
	_ = b[NodeSize-1]
	clear(b[:24])
	copy(b[24:40], n.Addr[:])
	le.PutUint16(b[40:], n.Port)
	copy(b[42:58], n.IOAddr[:])
	le.PutUint16(b[58:], n.IOPort)
	clear(b[60:64])
	le.PutUint16(b[64:], n.NrVnodes)
	clear(b[66:68])
	le.PutUint32(b[68:], n.Zone)
	le.PutUint64(b[72:], n.Space)
}

// Unmarshal reads an 80-byte sd_node from b.
func (n *Node) Unmarshal(b []byte) error {
	if len(b) < NodeSize {
		return fmt.Errorf("proto: sd_node needs %d bytes, got %d", NodeSize, len(b))
	}
	copy(n.Addr[:], b[24:40])
	n.Port = le.Uint16(b[40:])
	copy(n.IOAddr[:], b[42:58])
	n.IOPort = le.Uint16(b[58:])
	n.NrVnodes = le.Uint16(b[64:])
	n.Zone = le.Uint32(b[68:])
	n.Space = le.Uint64(b[72:])
	return nil
}

// MarshalNodes encodes nodes back to back.
func MarshalNodes(nodes []Node) []byte {
	b := make([]byte, len(nodes)*NodeSize)
	for i := range nodes {
		nodes[i].Marshal(b[i*NodeSize:])
	}
	return b
}

// UnmarshalNodes decodes n nodes from b.
func UnmarshalNodes(b []byte, n int) ([]Node, error) {
	// n > len(b)/NodeSize rather than len(b) < n*NodeSize: the product
	// overflows for a hostile n and would pass the check.
	if n < 0 || n > len(b)/NodeSize {
		return nil, fmt.Errorf("proto: %d nodes do not fit in %d bytes (%d each)", n, len(b), NodeSize)
	}
	nodes := make([]Node, n)
	for i := range nodes {
		if err := nodes[i].Unmarshal(b[i*NodeSize:]); err != nil {
			return nil, err
		}
	}
	return nodes, nil
}

// Cluster flags (§5.3).
const (
	ClusterFlagStrict        uint16 = 0x01
	ClusterFlagDiskMode      uint16 = 0x02
	ClusterFlagAutoVnodes    uint16 = 0x04
	ClusterFlagUseLock       uint16 = 0x08
	ClusterFlagRecycleVid    uint16 = 0x10
	ClusterFlagAvoidDiskfull uint16 = 0x20
)

// Cluster status values of cluster_info.status.
const (
	StatusOK       uint8 = 1
	StatusWait     uint8 = 2
	StatusShutdown uint8 = 3
	StatusKilled   uint8 = 4
)

// EpochLogHeaderSize is the size of struct epoch_log without its nodes.
const EpochLogHeaderSize = 48

// EpochLog is struct epoch_log: one membership version.
type EpochLog struct {
	Ctime           uint64
	Time            uint64 // plain time_t
	Epoch           uint32
	DisableRecovery uint8
	NrCopies        uint8
	CopyPolicy      uint8
	Flags           uint16
	DrvName         string
	Nodes           []Node
}

// MarshalHeader writes the 48-byte header with nr_nodes = nrNodes.
func (e *EpochLog) MarshalHeader(b []byte, nrNodes uint32) {
	_ = b[EpochLogHeaderSize-1]
	le.PutUint64(b[0:], e.Ctime)
	le.PutUint64(b[8:], e.Time)
	le.PutUint32(b[16:], e.Epoch)
	le.PutUint32(b[20:], nrNodes)
	b[24], b[25], b[26], b[27] = e.DisableRecovery, e.NrCopies, e.CopyPolicy, 0
	clear(b[28:30])
	le.PutUint16(b[30:], e.Flags)
	putString(b[32:48], e.DrvName)
}

// Unmarshal decodes a record of 48 + maxNodes*80 bytes from b.
func (e *EpochLog) Unmarshal(b []byte, maxNodes int) error {
	if len(b) < EpochLogHeaderSize {
		return fmt.Errorf("proto: epoch_log needs %d bytes, got %d", EpochLogHeaderSize, len(b))
	}
	e.Ctime = le.Uint64(b[0:])
	e.Time = le.Uint64(b[8:])
	e.Epoch = le.Uint32(b[16:])
	n := int(le.Uint32(b[20:]))
	e.DisableRecovery, e.NrCopies, e.CopyPolicy = b[24], b[25], b[26]
	e.Flags = le.Uint16(b[30:])
	e.DrvName = cString(b[32:48])
	if n > maxNodes {
		return fmt.Errorf("proto: epoch_log has %d nodes, room for %d", n, maxNodes)
	}
	nodes, err := UnmarshalNodes(b[EpochLogHeaderSize:], n)
	if err != nil {
		return err
	}
	e.Nodes = nodes
	return nil
}

// ClusterInfoSize is the wire size of struct cluster_info.
const ClusterInfoSize = 48 + MaxNodes*NodeSize // 491568

// ClusterInfo is struct cluster_info (§5.3).
type ClusterInfo struct {
	ProtoVer        uint8
	DisableRecovery uint8
	Epoch           uint32
	Ctime           uint64
	Flags           uint16
	NrCopies        uint8
	CopyPolicy      uint8
	Status          uint8
	BlockSizeShift  uint8
	DefaultStore    string
	Nodes           []Node
}

// Marshal encodes the full 491568-byte cluster_info.
func (c *ClusterInfo) Marshal() []byte {
	b := make([]byte, ClusterInfoSize)
	b[0], b[1] = c.ProtoVer, c.DisableRecovery
	le.PutUint16(b[2:], uint16(len(c.Nodes)))
	le.PutUint32(b[4:], c.Epoch)
	le.PutUint64(b[8:], c.Ctime)
	le.PutUint16(b[16:], c.Flags)
	b[18], b[19], b[20], b[21] = c.NrCopies, c.CopyPolicy, c.Status, c.BlockSizeShift
	putString(b[25:41], c.DefaultStore)
	for i := range c.Nodes {
		c.Nodes[i].Marshal(b[48+i*NodeSize:])
	}
	return b
}

// Unmarshal decodes a cluster_info.
func (c *ClusterInfo) Unmarshal(b []byte) error {
	if len(b) < 48 {
		return fmt.Errorf("proto: cluster_info needs at least 48 bytes, got %d", len(b))
	}
	c.ProtoVer, c.DisableRecovery = b[0], b[1]
	n := int(int16(le.Uint16(b[2:])))
	c.Epoch = le.Uint32(b[4:])
	c.Ctime = le.Uint64(b[8:])
	c.Flags = le.Uint16(b[16:])
	c.NrCopies, c.CopyPolicy, c.Status, c.BlockSizeShift = b[18], b[19], b[20], b[21]
	c.DefaultStore = cString(b[25:41])
	if n < 0 || n > MaxNodes {
		return fmt.Errorf("proto: cluster_info has %d nodes", n)
	}
	nodes, err := UnmarshalNodes(b[48:], n)
	if err != nil {
		return err
	}
	c.Nodes = nodes
	return nil
}

// VdiStateSize is the wire size of struct vdi_state.
const VdiStateSize = 1428

// Lock states of vdi_state.lock_state.
const (
	LockStateUnlocked uint32 = 1
	LockStateLocked   uint32 = 2
	LockStateShared   uint32 = 3
)

// VdiState is struct vdi_state (§4.2), without the shared-lock participants.
type VdiState struct {
	Vid            uint32
	NrCopies       uint8
	Snapshot       bool
	Deleted        bool
	CopyPolicy     uint8
	BlockSizeShift uint8
	ParentVid      uint32
	LockState      uint32
	LockOwner      NodeID
}

// Marshal writes the 1428-byte record into b.
func (v *VdiState) Marshal(b []byte) {
	_ = b[VdiStateSize-1]
	clear(b[:VdiStateSize])
	le.PutUint32(b[0:], v.Vid)
	b[4] = v.NrCopies
	b[5] = boolByte(v.Snapshot)
	b[6] = boolByte(v.Deleted)
	b[7], b[8] = v.CopyPolicy, v.BlockSizeShift
	le.PutUint32(b[12:], v.ParentVid)
	le.PutUint32(b[16:], v.LockState)
	copy(b[20:36], v.LockOwner.Addr[:])
	le.PutUint16(b[36:], v.LockOwner.Port)
	copy(b[38:54], v.LockOwner.IOAddr[:])
	le.PutUint16(b[54:], v.LockOwner.IOPort)
}

// Unmarshal decodes a 1428-byte record.
func (v *VdiState) Unmarshal(b []byte) error {
	if len(b) < VdiStateSize {
		return fmt.Errorf("proto: vdi_state needs %d bytes, got %d", VdiStateSize, len(b))
	}
	v.Vid = le.Uint32(b[0:])
	v.NrCopies = b[4]
	v.Snapshot = b[5] != 0
	v.Deleted = b[6] != 0
	v.CopyPolicy, v.BlockSizeShift = b[7], b[8]
	v.ParentVid = le.Uint32(b[12:])
	v.LockState = le.Uint32(b[16:])
	copy(v.LockOwner.Addr[:], b[20:36])
	v.LockOwner.Port = le.Uint16(b[36:])
	copy(v.LockOwner.IOAddr[:], b[38:54])
	v.LockOwner.IOPort = le.Uint16(b[54:])
	return nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// VdiAttr is struct sheepdog_vdi_attr (§3.3).
type VdiAttr struct {
	Name   string
	Tag    string
	Ctime  uint64
	SnapID uint32
	Key    string
	Value  []byte
}

// Marshal encodes the 66320-byte record.
func (a *VdiAttr) Marshal() []byte {
	b := make([]byte, AttrSize)
	putString(b[0:256], a.Name)
	putString(b[256:512], a.Tag)
	le.PutUint64(b[512:], a.Ctime)
	le.PutUint32(b[520:], a.SnapID)
	le.PutUint32(b[524:], uint32(len(a.Value)))
	putString(b[528:784], a.Key)
	copy(b[784:], a.Value)
	return b
}

// Unmarshal decodes a 66320-byte record.
func (a *VdiAttr) Unmarshal(b []byte) error {
	if len(b) < AttrSize {
		return fmt.Errorf("proto: vdi_attr needs %d bytes, got %d", AttrSize, len(b))
	}
	a.Name = cString(b[0:256])
	a.Tag = cString(b[256:512])
	a.Ctime = le.Uint64(b[512:])
	a.SnapID = le.Uint32(b[520:])
	n := le.Uint32(b[524:])
	if n > AttrValueLen {
		return fmt.Errorf("proto: vdi_attr value_len %d over %d", n, AttrValueLen)
	}
	a.Key = cString(b[528:784])
	a.Value = append([]byte(nil), b[784:784+n]...)
	return nil
}

// RecoveryStateSize is the wire size of struct recovery_state.
const RecoveryStateSize = 24

// RecoveryState is STAT_RECOVERY's reply.
type RecoveryState struct {
	InRecovery bool
	State      uint32
	NrFinished uint64
	NrTotal    uint64
}

// Marshal encodes the 24-byte record.
func (r *RecoveryState) Marshal() []byte {
	b := make([]byte, RecoveryStateSize)
	b[0] = boolByte(r.InRecovery)
	le.PutUint32(b[4:], r.State)
	le.PutUint64(b[8:], r.NrFinished)
	le.PutUint64(b[16:], r.NrTotal)
	return b
}

// Unmarshal decodes the 24-byte record.
func (r *RecoveryState) Unmarshal(b []byte) error {
	if len(b) < RecoveryStateSize {
		return fmt.Errorf("proto: recovery_state needs %d bytes, got %d", RecoveryStateSize, len(b))
	}
	r.InRecovery = b[0] != 0
	r.State = le.Uint32(b[4:])
	r.NrFinished = le.Uint64(b[8:])
	r.NrTotal = le.Uint64(b[16:])
	return nil
}

// VdiName is the 256-byte NUL-padded name payload of NEW_VDI, GET_VDI_INFO
// and DEL_VDI, optionally followed by a 256-byte tag.
func VdiName(name, tag string, withTag bool) []byte {
	n := MaxVdiLen
	if withTag {
		n += MaxVdiTagLen
	}
	b := make([]byte, n)
	copy(b[:MaxVdiLen-1], name)
	if withTag {
		copy(b[MaxVdiLen:MaxVdiLen+MaxVdiTagLen-1], tag)
	}
	return b
}

// ParseVdiName decodes a name[256] or name[256]+tag[256] payload.
func ParseVdiName(b []byte) (name, tag string, err error) {
	switch len(b) {
	case MaxVdiLen:
		return cString(b), "", nil
	case MaxVdiLen + MaxVdiTagLen:
		return cString(b[:MaxVdiLen]), cString(b[MaxVdiLen:]), nil
	}
	return "", "", fmt.Errorf("proto: vdi name payload of %d bytes: %w", len(b), ResInvalidParms)
}
