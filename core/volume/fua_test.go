package volume

import (
	"bytes"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// On a write-back volume, WriteAtFUA sends every object write without
// CACHE (the allocation's inode update included) and keeps the volume's
// other flags. Other writes carry the volume's flags, the allocation of a
// fresh object included ("Lazy allocation"), except the clearing of a
// table entry before its object is removed, which is stable whatever the
// flags. A FUA write to an object allocated write-back and not flushed
// since writes its table entry again, stable.
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
			[]uint16{vol.Flags, vol.Flags}}, // create, table entry
		{"overwrite", func() error { _, err := vol.WriteAtContext(ctx, pattern(3, 512), 2*objSize); return err },
			[]uint16{vol.Flags}},
		{"FUA overwrite before a flush", func() error { _, err := vol.WriteAtFUA(ctx, pattern(3, 512), 2*objSize); return err },
			[]uint16{stable, stable}}, // data, table entry again
		{"flush", func() error { return vol.Flush(ctx) }, nil},
		{"FUA overwrite after a flush", func() error { _, err := vol.WriteAtFUA(ctx, pattern(3, 512), 2*objSize); return err },
			[]uint16{stable}},
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

// An entry of the volume's own that names an object lost in a crash (a
// write-back allocation never flushed: the entry reached the disk, the
// object did not) reads as a hole, never as an error, and a write there
// creates the object again under the same entry.
func TestLostWriteBackAllocation(t *testing.T) {
	m, vol := newVolume(t, 4*objSize)
	vol.Flags = proto.FlagCmdCache
	if _, err := vol.WriteAtContext(ctx, pattern(1, 4096), objSize); err != nil {
		t.Fatal(err)
	}
	if e := inodeEntry(t, m, vid, 1); e != vid {
		t.Fatalf("entry 1 is %#x, want %#x", e, vid)
	}
	m.mu.Lock()
	delete(m.objs, proto.VidToDataOid(vid, 1))
	m.mu.Unlock()

	reopened := open(t, m, vid, false)
	reopened.Flags = proto.FlagCmdCache
	if got := mustRead(t, reopened, objSize, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("the lost object does not read as a hole")
	}
	if _, err := reopened.WriteAtContext(ctx, pattern(2, 512), objSize+100); err != nil {
		t.Fatalf("write over the lost object: %v", err)
	}
	want := make([]byte, 4096)
	copy(want[100:], pattern(2, 512))
	if got := mustRead(t, reopened, objSize, 4096); !bytes.Equal(got, want) {
		t.Error("the object created again reads wrong")
	}
	if e := inodeEntry(t, m, vid, 1); e != vid {
		t.Fatalf("entry 1 is %#x after the write, want %#x", e, vid)
	}
}
