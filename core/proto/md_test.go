package proto

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestMdInfoRoundTrip(t *testing.T) {
	if MdInfoSize != 263688 {
		t.Fatalf("MdInfoSize = %d, want sizeof(struct sd_md_info) = 263688", MdInfoSize)
	}
	disks := []MdDisk{
		{Index: 0, Free: 1 << 30, Used: 4 << 20, Path: "/var/lib/sheep/d0"},
		{Index: 1, Free: 7, Used: 0, Path: "/mnt/disk1"},
	}
	b := MarshalMdInfo(disks)
	// Field offsets as the C struct lays them out.
	if got := binary.LittleEndian.Uint64(b[4120+8:]); got != 7 {
		t.Errorf("disk 1 free at offset 4128: %d", got)
	}
	if got := string(b[4120+24 : 4120+24+10]); got != "/mnt/disk1" {
		t.Errorf("disk 1 path at offset 4144: %q", got)
	}
	if got := binary.LittleEndian.Uint32(b[263680:]); got != 2 {
		t.Errorf("nr at offset 263680: %d", got)
	}
	back, err := UnmarshalMdInfo(b)
	if err != nil || !reflect.DeepEqual(back, disks) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	long := MarshalMdInfo([]MdDisk{{Path: strings.Repeat("x", 5000)}})
	if back, _ := UnmarshalMdInfo(long); len(back[0].Path) != 4095 {
		t.Errorf("a long path comes back with %d bytes, want 4095", len(back[0].Path))
	}
	if _, err := UnmarshalMdInfo(b[:100]); err == nil {
		t.Error("short buffer accepted")
	}
	binary.LittleEndian.PutUint32(b[263680:], 65)
	if _, err := UnmarshalMdInfo(b); err == nil {
		t.Error("65 disks accepted")
	}
}

func FuzzUnmarshalMdInfo(f *testing.F) {
	f.Add(MarshalMdInfo([]MdDisk{{Index: 3, Free: 1, Used: 2, Path: "/d"}}))
	f.Add(make([]byte, 10))
	f.Fuzz(func(t *testing.T, b []byte) {
		disks, err := UnmarshalMdInfo(b)
		if err != nil {
			return
		}
		again, err := UnmarshalMdInfo(MarshalMdInfo(disks))
		if err != nil || !reflect.DeepEqual(again, disks) {
			t.Fatalf("re-encoding %d disks: %v", len(disks), err)
		}
	})
}
