package volume

import (
	"bytes"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// On a write-back volume, WriteAtFUA sends every object write without
// CACHE (the allocation's inode update included) and keeps the volume's
// other flags. Other writes carry the volume's flags, except the creation
// of an object and the clearing of a table entry before its object is
// removed: those are stable whatever the flags (see Volume.Flags).
func TestWriteAtFUAFlags(t *testing.T) {
	m, vol := newVolume(t, 4*objSize)
	vol.Flags = proto.FlagCmdCache | proto.FlagCmdDirect
	flags := func() []uint16 {
		m.mu.Lock()
		defer m.mu.Unlock()
		f := m.flags
		m.flags = nil
		return f
	}
	flags() // the inode's creation

	if _, err := vol.WriteAtFUA(ctx, pattern(1, 4096), objSize-1024); err != nil {
		t.Fatal(err)
	}
	got := flags()
	if len(got) != 4 { // two creates, two inode updates
		t.Fatalf("%d object writes, want 4", len(got))
	}
	for _, f := range got {
		if f != proto.FlagCmdDirect {
			t.Errorf("FUA write carried flags %#x, want %#x", f, proto.FlagCmdDirect)
		}
	}
	if got := mustRead(t, vol, objSize-1024, 4096); !bytes.Equal(got, pattern(1, 4096)) {
		t.Error("read back differs")
	}

	stable := vol.Flags &^ proto.FlagCmdCache
	for _, tc := range []struct {
		name string
		op   func() error
		want []uint16
	}{
		{"allocating write", func() error { _, err := vol.WriteAtContext(ctx, pattern(2, 4096), 2*objSize); return err },
			[]uint16{stable, vol.Flags}}, // create, table entry
		{"overwrite", func() error { _, err := vol.WriteAtContext(ctx, pattern(3, 512), 2*objSize); return err },
			[]uint16{vol.Flags}},
		{"write zeroes", func() error { return vol.WriteZeroes(ctx, 0, 512, false) },
			[]uint16{vol.Flags}},
		{"discard of an object", func() error { return vol.Discard(ctx, 2*objSize, objSize) },
			[]uint16{stable}}, // table entry; the removal carries no flags
	} {
		if err := tc.op(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := flags(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: object writes with flags %#x, want %#x", tc.name, got, tc.want)
		}
	}
}
