package volume

import (
	"context"
	"slices"
	"testing"
)

// vdiFlusher is memObjects with a per-VDI flush that records what it was
// asked to flush.
type vdiFlusher struct {
	*memObjects
	vids []uint32
	all  int
}

func (f *vdiFlusher) FlushVdi(ctx context.Context, vid uint32) error {
	f.vids = append(f.vids, vid)
	return ctx.Err()
}

func (f *vdiFlusher) Flush(ctx context.Context) error {
	f.all++
	return ctx.Err()
}

// Over an ObjectIO that can flush one VDI (the object cache), a volume's
// Flush asks for its own VDI only, not for every VDI the node caches.
func TestFlushNamesItsVdi(t *testing.T) {
	m := newMemObjects(shift)
	putInode(t, m, inode{vid: vid, name: "test", size: 4 * objSize})
	f := &vdiFlusher{memObjects: m}
	vol, err := Open(ctx, f, vid, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vol.WriteAtContext(ctx, pattern(1, 4096), objSize); err != nil {
		t.Fatal(err)
	}
	if err := vol.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.vids, []uint32{vid}) || f.all != 0 {
		t.Fatalf("Flush asked for VDIs %x and %d whole flushes, want [%x] and none", f.vids, f.all, vid)
	}
}
