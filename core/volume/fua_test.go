package volume

import (
	"bytes"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// On a write-back volume, WriteAtFUA sends every object write without
// CACHE (the allocation's inode update included) and keeps the volume's
// other flags; WriteAtContext, Discard and WriteZeroes carry the
// volume's flags.
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

	mustWrite(t, vol, pattern(2, 4096), 2*objSize)
	if err := vol.WriteZeroes(ctx, 0, 512, false); err != nil {
		t.Fatal(err)
	}
	if err := vol.Discard(ctx, 2*objSize, objSize); err != nil {
		t.Fatal(err)
	}
	for _, f := range flags() {
		if f != vol.Flags {
			t.Errorf("write-back write carried flags %#x, want %#x", f, vol.Flags)
		}
	}
}
