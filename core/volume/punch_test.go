package volume

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// punchObjects is memObjects with PunchObject: it records every punch and
// zeroes the range in place.
type punchObjects struct {
	*memObjects
	punches []punchCall // under memObjects.mu
}

type punchCall struct {
	oid   uint64
	off   int64
	n     int64
	flags uint16
}

var _ Puncher = (*punchObjects)(nil)

func (p *punchObjects) PunchObject(ctx context.Context, oid uint64, off, n int64, flags uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check("punch", oid, off, int(n)); err != nil {
		return err
	}
	if err := p.writable(oid); err != nil {
		return err
	}
	o, ok := p.objs[oid]
	if !ok {
		return fmt.Errorf("punch %016x: %w", oid, proto.ResNoObj)
	}
	if off < int64(len(o)) {
		clear(o[off:min(off+n, int64(len(o)))])
	}
	p.punches = append(p.punches, punchCall{oid, off, n, flags})
	return nil
}

// take returns the punches since the last call, and the number of
// object writes and creates since then.
func (p *punchObjects) take() ([]punchCall, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps, w := p.punches, len(p.flags)
	p.punches, p.flags = nil, nil
	return ps, w
}

// TestPartialZeroPunches: over a Puncher, a partial discard (or
// WriteZeroes without noHole) of an object the VDI owns punches it with
// the volume's flags and writes nothing; one of an object shared with a
// snapshot copies it on write with zeros and never punches (the punch
// would reach the snapshot's data); WriteZeroes with noHole writes zeros.
func TestPartialZeroPunches(t *testing.T) {
	own := func(idx uint32) uint64 { return proto.VidToDataOid(vid, idx) }
	for _, tc := range []struct {
		name    string
		call    func(v *Volume) error
		zeroed  [2]int64 // range that must read as zeros
		punches []punchCall
		writes  int    // object writes and creates
		owner2  uint32 // data_vdi_id[2] after the call
	}{
		{"discard part of an own object", func(v *Volume) error { return v.Discard(ctx, objSize+10, 100) },
			[2]int64{objSize + 10, objSize + 110}, []punchCall{{own(1), 10, 100, proto.FlagCmdCache}}, 0, snapVid},
		{"write zeroes may punch", func(v *Volume) error { return v.WriteZeroes(ctx, 4096, 8192, false) },
			[2]int64{4096, 4096 + 8192}, []punchCall{{own(0), 4096, 8192, proto.FlagCmdCache}}, 0, snapVid},
		{"discard across objects", func(v *Volume) error { return v.Discard(ctx, objSize/2, objSize*3/2) },
			// The tail of object 0 is punched; object 1 is dropped
			// (its table entry written, the object removed).
			[2]int64{objSize / 2, 2 * objSize}, []punchCall{{own(0), objSize / 2, objSize / 2, proto.FlagCmdCache}}, 1, snapVid},
		{"discard part of a shared object", func(v *Volume) error { return v.Discard(ctx, 2*objSize+10, 100) },
			// Copy-on-write with zeros: a create and its table entry.
			[2]int64{2*objSize + 10, 2*objSize + 110}, nil, 2, vid},
		{"write zeroes, no hole", func(v *Volume) error { return v.WriteZeroes(ctx, objSize+10, 100, true) },
			[2]int64{objSize + 10, objSize + 110}, nil, 1, snapVid},
		{"discard in a hole", func(v *Volume) error { return v.Discard(ctx, 3*objSize+10, 100) },
			[2]int64{3 * objSize, 4 * objSize}, nil, 0, snapVid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Index 0 and 1 owned, index 2 shared with a snapshot, 3 a hole.
			m := &punchObjects{memObjects: newMemObjects(shift)}
			putInode(t, m.memObjects, inode{vid: snapVid, name: "test", size: 4 * objSize, snapshot: true, table: map[uint32]uint32{2: snapVid}})
			putInode(t, m.memObjects, inode{vid: vid, name: "test", size: 4 * objSize, table: map[uint32]uint32{2: snapVid}})
			if err := m.CreateAndWrite(ctx, proto.VidToDataOid(snapVid, 2), 0, 0, pattern(4, objSize), 0); err != nil {
				t.Fatal(err)
			}
			m.readonly[snapVid] = true
			vol, err := Open(ctx, m, vid, false)
			if err != nil {
				t.Fatal(err)
			}
			vol.Flags = proto.FlagCmdCache
			mustWrite(t, vol, pattern(5, 2*objSize), 0)
			before := mustRead(t, vol, 0, 4*objSize)
			m.take()

			if err := tc.call(vol); err != nil {
				t.Fatal(err)
			}
			punches, writes := m.take()
			if !slices.Equal(punches, tc.punches) {
				t.Errorf("punches %+v, want %+v", punches, tc.punches)
			}
			if writes != tc.writes {
				t.Errorf("%d object writes, want %d", writes, tc.writes)
			}
			after := mustRead(t, vol, 0, 4*objSize)
			z0, z1 := tc.zeroed[0], tc.zeroed[1]
			if !bytes.Equal(after[z0:z1], make([]byte, z1-z0)) {
				t.Errorf("[%d,%d) does not read as zeros", z0, z1)
			}
			if !bytes.Equal(after[:z0], before[:z0]) || !bytes.Equal(after[z1:], before[z1:]) {
				t.Errorf("bytes outside [%d,%d) changed", z0, z1)
			}
			if vol.Owner(2) != tc.owner2 || inodeEntry(t, m.memObjects, vid, 2) != tc.owner2 {
				t.Errorf("index 2 owner %x (inode %x), want %x", vol.Owner(2), inodeEntry(t, m.memObjects, vid, 2), tc.owner2)
			}
			if got := m.object(proto.VidToDataOid(snapVid, 2)); !bytes.Equal(got, pattern(4, objSize)) {
				t.Error("the snapshot's object changed")
			}
		})
	}
}
