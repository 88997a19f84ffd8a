package proto

// FNV-1a 64 (§4.1).
const (
	FNV1aBasis uint64 = 0xcbf29ce484222325
	FNV1aPrime uint64 = 0x100000001b3
)

// FNV1a continues an FNV-1a 64 hash from h over b.
func FNV1a(b []byte, h uint64) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= FNV1aPrime
	}
	return h
}

func fnv1aU64(v uint64, h uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v >> (8 * i) & 0xff
		h *= FNV1aPrime
	}
	return h
}

// HashNext is sd_hash_next: one more FNV-1a round over the 8 LE bytes of h,
// with h as the basis.
func HashNext(h uint64) uint64 { return fnv1aU64(h, h) }

// Hash is sd_hash: FNV-1a over b, then HashNext.
func Hash(b []byte) uint64 { return HashNext(FNV1a(b, FNV1aBasis)) }

// HashOid is sd_hash_oid: the ring position of an object.
func HashOid(oid uint64) uint64 { return HashNext(fnv1aU64(oid, FNV1aBasis)) }

// VdiNameHash is the vid where the probe for name starts: FNV-1a of the name
// bytes masked to 24 bits, with 0 replaced by 1 (vid 0 is never used).
func VdiNameHash(name string) uint32 {
	h := FNV1aBasis
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= FNV1aPrime
	}
	v := uint32(h & (NrVdis - 1))
	if v == 0 {
		v = 1
	}
	return v
}

// AttrHash is the attribute slot where the probe for a key starts: FNV-1a
// over name[256], tag[256], snap_id (4 LE bytes) and key[256].
func AttrHash(name, tag string, snapID uint32, key string) uint32 {
	var buf [256*3 + 4]byte
	copy(buf[0:256], name)
	copy(buf[256:512], tag)
	le.PutUint32(buf[512:], snapID)
	copy(buf[516:], key)
	return uint32(FNV1a(buf[:], FNV1aBasis))
}
