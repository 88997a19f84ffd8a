package proto

import (
	"strings"
	"testing"
)

func TestStripKey(t *testing.T) {
	oids := []uint64{VidToDataOid(0x7c2b25, 0), VidToDataOid(0xffffff, 0xffffffff), VidToVmstateOid(1, 3)}
	seen := map[uint64]bool{}
	for _, oid := range oids {
		if !IsErasureOid(oid) {
			t.Fatalf("%016x not erasure", oid)
		}
		seen[oid] = true
		for i := range MaxStrips {
			k := StripKey(oid, i)
			if seen[k] {
				t.Fatalf("key %016x twice", k)
			}
			seen[k] = true
			o, idx, ok := SplitKey(k)
			if !ok || o != oid || idx != i {
				t.Fatalf("SplitKey(StripKey(%016x, %d)) = %016x, %d, %v", oid, i, o, idx, ok)
			}
			name := ObjectName(k)
			if want := ObjectName(oid) + "_" + itoa(i); name != want {
				t.Fatalf("name %q, want %q", name, want)
			}
			if back, ok := ParseObjectName(name); !ok || back != k {
				t.Fatalf("ParseObjectName(%q) = %016x, %v", name, back, ok)
			}
		}
	}
	for _, oid := range []uint64{VidToVdiOid(5), VidToAttrOid(5, 1), VdiBtreeBit | 5<<32, LedgerBit | 5<<32} {
		if IsErasureOid(oid) {
			t.Fatalf("%016x is erasure", oid)
		}
		if _, _, ok := SplitKey(oid); ok {
			t.Fatalf("%016x splits", oid)
		}
		if k, ok := ParseObjectName(ObjectName(oid)); !ok || k != oid {
			t.Fatalf("round trip of %016x", oid)
		}
	}
	for _, bad := range []string{"00000000000000001_1", "0000000000000001_", "0000000000000001_01", "0000000000000001_31", "8000000000000000_0", "0000000000000001_-1", "0700000000000000"} {
		if _, ok := ParseObjectName(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return string(rune('0'+i/10)) + string(rune('0'+i%10))
}

func FuzzParseObjectName(f *testing.F) {
	f.Add("0000000100000002_3")
	f.Add("8000000100000000")
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := ParseObjectName(s)
		if ok && !strings.EqualFold(ObjectName(k), s) {
			t.Fatalf("%q -> %016x -> %q", s, k, ObjectName(k))
		}
	})
}
