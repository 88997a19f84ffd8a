package proto

import "fmt"

// The object cache's wire vocabulary (docs/protocol.md §6): Sheepdog 0.x's
// GET_CACHE_INFO reply, and an op of ours that asks a node to flush what
// its cache holds of a VDI.

// OpCacheFlushPeer asks a sheep to push what its object cache holds of a
// VDI (obj.oid = the inode's oid) to the replicas and to forget it, before
// a snapshot, clone, delete or resize decided through another node reads
// or changes the VDI (internal, proto 0x0a). With FlagCacheDropOnly it
// forgets without pushing (DELETE_CACHE). A sheep without a cache answers
// SUCCESS.
const OpCacheFlushPeer Opcode = 0xFA

// FlagCacheDropOnly is OpCacheFlushPeer's flag: drop, do not push.
const FlagCacheDropOnly uint16 = 0x8000

// CacheInfoMax is the number of VDI records of a CacheInfo (CACHE_MAX).
const CacheInfoMax = 1024

// CacheInfoSize is the size of struct object_cache_info: two u64, 1024
// records of 12 bytes, an int and a u8, padded to 8.
const CacheInfoSize = 16 + CacheInfoMax*12 + 4 + 1 + 3

// CacheVdi is one struct cache_info: a VDI's cached and dirty objects.
type CacheVdi struct {
	Vid, Dirty, Total uint32
}

// CacheInfo is struct object_cache_info, GET_CACHE_INFO's reply.
type CacheInfo struct {
	Size, Used uint64
	Vdis       []CacheVdi // at most CacheInfoMax
	DirectIO   bool
}

// Marshal encodes ci in CacheInfoSize bytes (records past CacheInfoMax are
// left out).
func (ci *CacheInfo) Marshal() []byte {
	b := make([]byte, CacheInfoSize)
	le.PutUint64(b[0:], ci.Size)
	le.PutUint64(b[8:], ci.Used)
	n := min(len(ci.Vdis), CacheInfoMax)
	for i, v := range ci.Vdis[:n] {
		p := b[16+12*i:]
		le.PutUint32(p[0:], v.Vid)
		le.PutUint32(p[4:], v.Dirty)
		le.PutUint32(p[8:], v.Total)
	}
	le.PutUint32(b[16+12*CacheInfoMax:], uint32(n))
	if ci.DirectIO {
		b[16+12*CacheInfoMax+4] = 1
	}
	return b
}

// Unmarshal decodes b, CacheInfoSize bytes.
func (ci *CacheInfo) Unmarshal(b []byte) error {
	if len(b) < CacheInfoSize {
		return fmt.Errorf("object_cache_info of %d bytes, want %d: %w", len(b), CacheInfoSize, ResInvalidParms)
	}
	ci.Size, ci.Used = le.Uint64(b[0:]), le.Uint64(b[8:])
	n := int32(le.Uint32(b[16+12*CacheInfoMax:]))
	if n < 0 || n > CacheInfoMax {
		return fmt.Errorf("object_cache_info with %d records: %w", n, ResInvalidParms)
	}
	ci.Vdis = make([]CacheVdi, n)
	for i := range ci.Vdis {
		p := b[16+12*i:]
		ci.Vdis[i] = CacheVdi{Vid: le.Uint32(p[0:]), Dirty: le.Uint32(p[4:]), Total: le.Uint32(p[8:])}
	}
	ci.DirectIO = b[16+12*CacheInfoMax+4] != 0
	return nil
}
