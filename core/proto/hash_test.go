package proto

import (
	"net/netip"
	"testing"
)

func TestVdiNameHash(t *testing.T) {
	tests := []struct {
		name string
		want uint32
	}{
		// docs/protocol.md §4.1 vectors.
		{"test", 0x7c2b25},
		{"test2", 0xfd3815},
		{"test5", 0xfd2c30},
		{"01909709", 1}, // hashes to 0; vid 0 is never used
		{"05421217", 0xffffff},
		{"00471718", 0xfffff9},
		// Vids sheep handed out in dog-wire.log (NEW_VDI replies on an
		// empty cluster, so no probing moved them off the hash).
		{"Alice", 0x15d167},
		{"Pre", 0x5afa26},
		{"Charlie", 0x3ca881},
	}
	for _, tt := range tests {
		if got := VdiNameHash(tt.name); got != tt.want {
			t.Errorf("VdiNameHash(%q) = %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

func TestNodeHashes(t *testing.T) {
	id := NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7000"))
	key := id.HashKey()
	wantKey := [18]byte{12: 127, 15: 1, 16: 0x58, 17: 0x1b} // addr, then LE 7000
	if key != wantKey {
		t.Fatalf("HashKey = %x, want %x", key, wantKey)
	}
	h0 := Hash(key[:])
	if h0 != 0x9cb3d6dd0a4c0f9f {
		t.Errorf("Hash(127.0.0.1:7000) = %#x, want 0x9cb3d6dd0a4c0f9f", h0)
	}
	if got := HashNext(h0); got != 0x3af2cba6e538cdf3 {
		t.Errorf("HashNext(%#x) = %#x, want 0x3af2cba6e538cdf3", h0, got)
	}
}

func TestHashOid(t *testing.T) {
	if got := HashOid(0x80fd381500000000); got != 0x2cd1177b9863619c {
		t.Errorf("HashOid(0x80fd381500000000) = %#x, want 0x2cd1177b9863619c", got)
	}
	// sd_hash_oid is sd_hash over the 8 LE bytes of the oid.
	for _, oid := range []uint64{0, 1, 0x80fd381500000000, VidToDataOid(0x15d167, 7), ^uint64(0)} {
		var b [8]byte
		le.PutUint64(b[:], oid)
		if got, want := HashOid(oid), Hash(b[:]); got != want {
			t.Errorf("HashOid(%#x) = %#x, Hash of its LE bytes = %#x", oid, got, want)
		}
	}
}

func TestFNV1a(t *testing.T) {
	// Standard FNV-1a 64 vectors.
	tests := []struct {
		in   string
		want uint64
	}{
		{"", 0xcbf29ce484222325},
		{"a", 0xaf63dc4c8601ec8c},
		{"foobar", 0x85944171f73967e8},
	}
	for _, tt := range tests {
		if got := FNV1a([]byte(tt.in), FNV1aBasis); got != tt.want {
			t.Errorf("FNV1a(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
	// Continuing a hash equals hashing the concatenation.
	if a, b := FNV1a([]byte("bar"), FNV1a([]byte("foo"), FNV1aBasis)), FNV1a([]byte("foobar"), FNV1aBasis); a != b {
		t.Errorf("chained FNV1a = %#x, one pass = %#x", a, b)
	}
}

func TestAttrHash(t *testing.T) {
	// dog vdi setattr Alice owner alice: GET_VDI_ATTR answered attr_id
	// 0xe2be9a94 on an empty attribute space (dog-wire.log, c32).
	if got := AttrHash("Alice", "", 0, "owner"); got != 0xe2be9a94 {
		t.Errorf("AttrHash(Alice, owner) = %#x, want 0xe2be9a94", got)
	}
	// It hashes the full fixed-size fields: name[256], tag[256], snap_id,
	// key[256].
	var buf [256*3 + 4]byte
	copy(buf[0:], "Alice")
	copy(buf[256:], "s1")
	le.PutUint32(buf[512:], 3)
	copy(buf[516:], "k")
	if got, want := AttrHash("Alice", "s1", 3, "k"), uint32(FNV1a(buf[:], FNV1aBasis)); got != want {
		t.Errorf("AttrHash = %#x, want %#x", got, want)
	}
}
