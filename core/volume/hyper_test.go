package volume

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// newHyperVolume is a fresh hyper volume (store_policy 1) of the largest
// size its objects allow, with the depth-1 root sheep writes at create.
func newHyperVolume(t *testing.T) (*memObjects, *Volume) {
	t.Helper()
	m := newMemObjects(shift)
	ino := proto.Inode{Name: "hyper", VdiSize: objSize << 32, BlockSizeShift: shift, SnapID: 1, VdiID: vid, NrCopies: 1, StorePolicy: 1}
	buf := make([]byte, proto.DataVdiIDOffset+proto.BtreeHeaderSize)
	ino.MarshalHeader(buf)
	copy(buf[proto.DataVdiIDOffset:], proto.NewBtreeRoot())
	if err := m.CreateAndWrite(ctx, proto.VidToVdiOid(vid), 0, 0, buf, 0); err != nil {
		t.Fatal(err)
	}
	return m, open(t, m, vid, false)
}

// A hyper volume reads and writes anywhere in its 2^32 objects: the index
// is the inode's B-tree, which a reopen reads back, and a discarded object
// is removed and reads as a hole.
func TestHyperVolume(t *testing.T) {
	m, vol := newHyperVolume(t)
	offs := []int64{0, 5 << 40, objSize<<32 - 4096, 3<<50 + 12345}
	for i, off := range offs {
		mustWrite(t, vol, pattern(byte(i), 4096), off)
	}
	for _, v := range []*Volume{vol, open(t, m, vid, false)} {
		for i, off := range offs {
			if got := mustRead(t, v, off, 4096); !bytes.Equal(got, pattern(byte(i), 4096)) {
				t.Fatalf("read at %d differs", off)
			}
		}
		if got := mustRead(t, v, 7<<40, 4096); !bytes.Equal(got, make([]byte, 4096)) {
			t.Fatal("a hole does not read as zeros")
		}
	}
	// The inode holds a depth-1 tree of the four objects.
	root := m.object(proto.VidToVdiOid(vid))[proto.DataVdiIDOffset:]
	tree, err := proto.DecodeBtree(vid, 0, root, nil)
	if err != nil || tree.Depth() != 1 {
		t.Fatalf("root: %v, depth %d", err, tree.Depth())
	}
	n := 0
	tree.Walk(func(idx, owner uint32) {
		n++
		if owner != vid {
			t.Fatalf("index %d names %x", idx, owner)
		}
	})
	if n != len(offs) {
		t.Fatalf("%d entries, want %d", n, len(offs))
	}
	// Discarding a whole object removes it.
	idx := uint32(offs[1] / objSize)
	if err := vol.Discard(ctx, int64(idx)*objSize, objSize); err != nil {
		t.Fatal(err)
	}
	if m.object(proto.VidToDataOid(vid, idx)) != nil {
		t.Fatal("discarded object not removed")
	}
	if got := mustRead(t, open(t, m, vid, false), offs[1], 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("discarded object does not read as zeros after reopen")
	}
}

// A failed index update leaves the tree in memory as on disk: the write
// fails, and a retry succeeds and is read back after a reopen.
func TestHyperVolumeFailedIndexUpdate(t *testing.T) {
	m, vol := newHyperVolume(t)
	m.fail("write-inode", errors.New("disk on fire"))
	if _, err := vol.WriteAt(pattern(1, 100), 9<<40); err == nil {
		t.Fatal("write succeeded although its index update failed")
	}
	mustWrite(t, vol, pattern(2, 100), 9<<40)
	if got := mustRead(t, open(t, m, vid, false), 9<<40, 100); !bytes.Equal(got, pattern(2, 100)) {
		t.Fatal("retried write not read back")
	}
}
