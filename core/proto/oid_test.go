package proto

import "testing"

func TestOidConstructors(t *testing.T) {
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"VidToVdiOid(0xfd3815)", VidToVdiOid(0xfd3815), 0x80fd381500000000},
		{"VidToVdiOid(max)", VidToVdiOid(NrVdis - 1), 0x80ffffff00000000},
		{"VidToDataOid(0x5afa26, 1)", VidToDataOid(0x5afa26, 1), 0x005afa2600000001},
		{"VidToDataOid(1, max)", VidToDataOid(1, 0xffffffff), 0x00000001ffffffff},
		{"VidToVmstateOid(0x7c2b25, 3)", VidToVmstateOid(0x7c2b25, 3), 0x407c2b2500000003},
		{"VidToAttrOid(0x15d167, 0xe2be9a94)", VidToAttrOid(0x15d167, 0xe2be9a94), 0x2015d167e2be9a94}, // dog-wire.log c34
		{"VidToBtreeOid(0x7c2b25, 2)", VidToBtreeOid(0x7c2b25, 2), 0x107c2b2500000002},
		{"LedgerOid(data)", LedgerOid(0x007c2b2500000005), 0x087c2b2500000005},
		{"DataVdiIDOff(0)", uint64(DataVdiIDOff(0)), 4664},
		{"DataVdiIDOff(max)", uint64(DataVdiIDOff(MaxDataIndexes - 1)), GrefOffset - 4},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

func TestOidFields(t *testing.T) {
	tests := []struct {
		oid uint64
		vid uint32
		idx uint32
	}{
		{0x80fd381500000000, 0xfd3815, 0},
		{0x005afa2600000001, 0x5afa26, 1},
		{0x2015d167e2be9a94, 0x15d167, 0xe2be9a94},
		{0x087c2b2500000005, 0x7c2b25, 5},
		// Reserved bits 56–59 and the type bits never leak into the vid.
		{0xffffffffffffffff, 0xffffff, 0xffffffff},
		{0x0f00000000000000, 0, 0},
	}
	for _, tt := range tests {
		if got := OidToVid(tt.oid); got != tt.vid {
			t.Errorf("OidToVid(%#x) = %#x, want %#x", tt.oid, got, tt.vid)
		}
		if got := DataIndex(tt.oid); got != tt.idx {
			t.Errorf("DataIndex(%#x) = %#x, want %#x", tt.oid, got, tt.idx)
		}
	}
	// Round trips through every constructor.
	for _, vid := range []uint32{1, 0x7c2b25, NrVdis - 1} {
		for _, idx := range []uint32{0, 1, MaxDataIndexes - 1, 0xffffffff} {
			for _, oid := range []uint64{VidToDataOid(vid, idx), VidToVmstateOid(vid, idx), VidToAttrOid(vid, idx),
				VidToBtreeOid(vid, idx), LedgerOid(VidToDataOid(vid, idx))} {
				if OidToVid(oid) != vid || DataIndex(oid) != idx {
					t.Errorf("oid %#x: vid %#x idx %#x, want %#x %#x", oid, OidToVid(oid), DataIndex(oid), vid, idx)
				}
			}
		}
		if OidToVid(VidToVdiOid(vid)) != vid || DataIndex(VidToVdiOid(vid)) != 0 {
			t.Errorf("VidToVdiOid(%#x) does not round trip", vid)
		}
	}
}

func TestOidPredicates(t *testing.T) {
	type kinds struct{ vdi, vmstate, attr, btree, ledger, data bool }
	tests := []struct {
		name string
		oid  uint64
		want kinds
	}{
		{"inode", VidToVdiOid(0xfd3815), kinds{vdi: true}},
		{"data", VidToDataOid(0xfd3815, 4), kinds{data: true}},
		{"data index 0 of vid 0", 0, kinds{data: true}},
		{"vmstate", VidToVmstateOid(0xfd3815, 4), kinds{vmstate: true}},
		{"attr", VidToAttrOid(0xfd3815, 4), kinds{attr: true}},
		{"btree", VidToBtreeOid(0xfd3815, 4), kinds{btree: true}},
		{"ledger", LedgerOid(VidToDataOid(0xfd3815, 4)), kinds{ledger: true}},
		// Bits 56–58 are reserved, not type bits.
		{"reserved bits", 0x0700000000000001, kinds{data: true}},
	}
	for _, tt := range tests {
		got := kinds{IsVdiObj(tt.oid), IsVmstateObj(tt.oid), IsAttrObj(tt.oid), IsBtreeObj(tt.oid), IsLedgerObj(tt.oid), IsDataObj(tt.oid)}
		if got != tt.want {
			t.Errorf("%s (%#x): %+v, want %+v", tt.name, tt.oid, got, tt.want)
		}
	}
}

func TestObjectSize(t *testing.T) {
	tests := []struct {
		name  string
		oid   uint64
		shift uint8
		want  int64
	}{
		{"inode", VidToVdiOid(1), 0, 12587576},
		{"inode, shift ignored", VidToVdiOid(1), 20, 12587576},
		{"attr", VidToAttrOid(1, 2), 0, 66320},
		{"btree", VidToBtreeOid(1, 2), 20, 4 << 20},
		{"ledger", LedgerOid(VidToDataOid(1, 2)), 20, 4 << 20},
		{"data, default shift", VidToDataOid(1, 2), 0, 4 << 20},
		{"data, shift 22", VidToDataOid(1, 2), 22, 4 << 20},
		{"data, shift 20", VidToDataOid(1, 2), 20, 1 << 20},
		{"data, shift 31", VidToDataOid(1, 2), 31, 1 << 31},
		{"vmstate, shift 23", VidToVmstateOid(1, 2), 23, 8 << 20},
	}
	for _, tt := range tests {
		if got := ObjectSize(tt.oid, tt.shift); got != tt.want {
			t.Errorf("%s: ObjectSize(%#x, %d) = %d, want %d", tt.name, tt.oid, tt.shift, got, tt.want)
		}
	}
}

func TestVdiSizeLimits(t *testing.T) {
	if got := OldMaxVdiSize(22); got != 4<<40 {
		t.Errorf("OldMaxVdiSize(22) = %d, want 4 TiB", got)
	}
	if got := OldMaxVdiSize(20); got != 1<<40 {
		t.Errorf("OldMaxVdiSize(20) = %d, want 1 TiB", got)
	}
	if MaxVdiSize != 1<<54 {
		t.Errorf("MaxVdiSize = %d, want 2^54", MaxVdiSize)
	}
}
