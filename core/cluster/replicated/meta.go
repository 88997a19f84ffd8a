package replicated

import (
	"encoding/binary"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Identity names the cluster a node belongs to. The zero value is a fresh
// node that belongs to none yet.
type Identity struct {
	ClusterID  string // chosen at bootstrap (cluster.State.ClusterID)
	Ctime      uint64 // the format's creation time (0: not formatted)
	Generation uint32 // forced epochs so far (cluster.State.Generation)
}

// Conflicts reports why a and b cannot be one cluster, or "" when they
// can. Two named nodes are one cluster when the names match (a re-format
// keeps the name, while the new ctime reaches the nodes one by one); when
// either has no name yet, two formatted nodes must share the format's
// ctime. A node that knows no identity yet (fresh, or restarted before its
// log is replayed) conflicts with nobody.
func (a Identity) Conflicts(b Identity) string {
	if a.ClusterID != "" && b.ClusterID != "" {
		if a.ClusterID != b.ClusterID {
			return fmt.Sprintf("cluster id %s, ours %s", b.ClusterID, a.ClusterID)
		}
		return ""
	}
	if a.Ctime != 0 && b.Ctime != 0 && a.Ctime != b.Ctime {
		return fmt.Sprintf("formatted at ctime %x, ours %x", b.Ctime, a.Ctime)
	}
	return ""
}

// meta is what a sheep gossips about itself (memberlist's node metadata).
type meta struct {
	Node     proto.Node
	RaftPort uint16
	Identity
}

// Gossip metadata layouts. Version 0 (no version byte) is
// node | ctime u64 | raft port u16, as sheeps before identities sent it;
// version 1 is node | 0x01 | raft port u16 | ctime u64 | generation u32 |
// id length u8 | id. All integers little-endian.
const (
	metaV0Size   = proto.NodeSize + 10
	metaV1Fixed  = proto.NodeSize + 1 + 2 + 8 + 4 + 1
	metaVersion1 = 1
	maxIDLen     = 64
)

func (m meta) encode() []byte {
	id := m.ClusterID
	if len(id) > maxIDLen {
		id = id[:maxIDLen]
	}
	b := make([]byte, metaV1Fixed+len(id))
	m.Node.Marshal(b)
	o := proto.NodeSize
	b[o] = metaVersion1
	binary.LittleEndian.PutUint16(b[o+1:], m.RaftPort)
	binary.LittleEndian.PutUint64(b[o+3:], m.Ctime)
	binary.LittleEndian.PutUint32(b[o+11:], m.Generation)
	b[o+15] = byte(len(id))
	copy(b[metaV1Fixed:], id)
	return b
}

// decodeMeta decodes a peer's metadata. The bytes come from the network:
// any input gives a meta or an error, never a panic (FuzzDecodeMeta).
func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) < proto.NodeSize {
		return m, fmt.Errorf("node metadata of %d bytes, want at least %d", len(b), proto.NodeSize)
	}
	if err := m.Node.Unmarshal(b); err != nil {
		return m, fmt.Errorf("node metadata: %w", err)
	}
	rest := b[proto.NodeSize:]
	if len(b) == metaV0Size {
		m.Ctime = binary.LittleEndian.Uint64(rest)
		m.RaftPort = binary.LittleEndian.Uint16(rest[8:])
		return m, m.check()
	}
	if len(b) < metaV1Fixed {
		return m, fmt.Errorf("node metadata of %d bytes, want %d or at least %d", len(b), metaV0Size, metaV1Fixed)
	}
	if rest[0] != metaVersion1 {
		return m, fmt.Errorf("node metadata version %d unknown", rest[0])
	}
	m.RaftPort = binary.LittleEndian.Uint16(rest[1:])
	m.Ctime = binary.LittleEndian.Uint64(rest[3:])
	m.Generation = binary.LittleEndian.Uint32(rest[11:])
	n := int(rest[15])
	if n > maxIDLen || len(b) != metaV1Fixed+n {
		return m, fmt.Errorf("node metadata: cluster id of %d bytes in %d", n, len(b)-metaV1Fixed)
	}
	m.ClusterID = string(b[metaV1Fixed:])
	return m, m.check()
}

func (m *meta) check() error {
	if m.RaftPort == 0 {
		return fmt.Errorf("node metadata without a raft port")
	}
	return nil
}
