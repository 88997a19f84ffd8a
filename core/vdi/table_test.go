package vdi

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestTableRange: which data_vdi_id entries a write touches.
func TestTableRange(t *testing.T) {
	ino := proto.VidToVdiOid(0x7c2b25)
	for _, c := range []struct {
		oid    uint64
		off    int64
		n      int
		lo, hi uint32
		ok     bool
	}{
		{ino, 0, proto.InodeHeaderSize, 0, 0, false},
		{ino, 0, proto.InodeHeaderSize + 4, 0, 1, true},
		{ino, proto.DataVdiIDOffset + 8, 8, 2, 4, true},
		{ino, proto.DataVdiIDOffset + 6, 1, 1, 2, true},
		{ino, proto.GrefOffset, 8, 0, 0, false},
		{ino, proto.GrefOffset - 4, 12, proto.MaxDataIndexes - 1, proto.MaxDataIndexes, true},
		{proto.VidToDataOid(0x7c2b25, 0), proto.DataVdiIDOffset, 4, 0, 0, false},
	} {
		lo, hi, ok := TableRange(c.oid, c.off, c.n)
		if ok != c.ok || ok && (lo != c.lo || hi != c.hi) {
			t.Errorf("TableRange(%016x, %d, %d) = [%d,%d) %v, want [%d,%d) %v", c.oid, c.off, c.n, lo, hi, ok, c.lo, c.hi, c.ok)
		}
	}
}

func le32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// TestWriteTableReclaims: zeroing entries (a discard, dog's delete) frees
// the objects nobody else names; a copy-on-write index update frees the
// parent's object only once no snapshot names it.
func TestWriteTableReclaims(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	for i := uint32(0); i < 4; i++ {
		e.write(a, i, 'a')
	}
	if err := e.svc.WriteTable(e.ctx, proto.VidToVdiOid(a), int64(proto.DataVdiIDOff(1)), le32(0, 0), 0); err != nil {
		t.Fatal(err)
	}
	oid := proto.VidToDataOid
	if got, want := e.obj.dataOids(), []uint64{oid(a, 0), oid(a, 3)}; !slices.Equal(got, want) {
		t.Fatalf("after zeroing entries 1-2: %x, want %x", got, want)
	}
	// Writing the table of a snapshot: zeroing is dog's delete, a new
	// owner is QEMU's update racing a snapshot (READONLY).
	w, s := e.snapshot("disk", "")
	if err := e.svc.WriteTable(e.ctx, proto.VidToVdiOid(s), int64(proto.DataVdiIDOff(1)), le32(s), 0); !errors.Is(err, proto.ResReadonly) {
		t.Fatalf("new reference in a snapshot's table: %v, want READONLY", err)
	}
	if _, _, ok := TableRange(proto.VidToVdiOid(w), 0, 1); ok {
		t.Fatal("a header write counts as a table write")
	}
}

// gatedObjects blocks the first write of an inode's table until released
// and counts the reads of that table.
type gatedObjects struct {
	Objects
	oid     uint64
	reads   atomic.Int32
	entered chan struct{}
	release chan struct{}
	gated   atomic.Bool
}

func (g *gatedObjects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	if oid == g.oid && off >= proto.DataVdiIDOffset {
		g.reads.Add(1)
	}
	return g.Objects.ReadObject(ctx, oid, off, buf)
}

func (g *gatedObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if oid == g.oid && g.gated.CompareAndSwap(false, true) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Objects.WriteObject(ctx, oid, off, data, flags)
}

// TestWriteTableSerialised: two table writes of one inode through this
// node do not interleave their read-write-read: the second reads the
// table only once the first has read it back.
func TestWriteTableSerialised(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 8<<20)
	e.write(a, 0, 'a')
	g := &gatedObjects{Objects: e.obj, oid: proto.VidToVdiOid(a), entered: make(chan struct{}), release: make(chan struct{})}
	svc := New(g, e.cl, slog.New(slog.DiscardHandler))
	off := int64(proto.DataVdiIDOff(0))
	first := make(chan error, 1)
	go func() { first <- svc.WriteTable(e.ctx, g.oid, off, le32(0), 0) }()
	<-g.entered // the first write holds the table, between its reads
	second := make(chan error, 1)
	go func() { second <- svc.WriteTable(e.ctx, g.oid, off, le32(a), 0) }()
	time.Sleep(100 * time.Millisecond)
	if n := g.reads.Load(); n != 1 {
		t.Fatalf("%d table reads while the first write is in progress, want only its own", n)
	}
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	// Two per write, and the first write's reclaim checking whether the
	// table still names the object it dropped.
	if n := g.reads.Load(); n != 5 {
		t.Fatalf("%d table reads, want 5", n)
	}
}
