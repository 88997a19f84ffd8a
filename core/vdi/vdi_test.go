package vdi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Names with known hashes (docs/protocol.md §4.1, and pairs found by brute force
// over 8-digit strings; TestHashVectors checks them).
const (
	hashAlice = 0x15d167
	hashTest  = 0x7c2b25
	hashTop   = 0xffffff

	nameCollidingWithTest = "10168561" // hashes to 0x7c2b25 like "test"
	nameTop               = "05421217" // 0xffffff
	nameTop2              = "45840564" // 0xffffff too
	nameTop3              = "48852359" // 0xffffff too
	nameTop4              = "53701000" // 0xffffff too
	nameZero              = "01909709" // 0 → used as 1
)

var fixedNow = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

var self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7000")), NrVnodes: proto.DefaultVnodes}

// env is one formatted single-node cluster with a VDI service over
// in-memory objects of 1 MiB (block size shift 20).
type env struct {
	t   *testing.T
	ctx context.Context
	obj *memObjects
	cl  cluster.Driver
	svc *Service
}

func newEnv(t *testing.T, flags uint16) *env {
	t.Helper()
	cl, err := cluster.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newEnvOver(t, cl, flags)
}

func newEnvOver(t *testing.T, cl cluster.Driver, flags uint16) *env {
	t.Helper()
	ctx := context.Background()
	res, err := cl.Propose(ctx, &cluster.Entry{Kind: cluster.KindFormat, Ctime: proto.SheepTime(fixedNow), Time: fixedNow.Unix(),
		Copies: 3, Flags: flags, BlockSizeShift: 20, Store: "plain", Nodes: []proto.Node{self}})
	if err != nil || res != proto.ResSuccess {
		t.Fatalf("format: %v %v", res, err)
	}
	obj := newMemObjects(20)
	svc := New(obj, cl, slog.New(slog.DiscardHandler))
	svc.now = func() time.Time { return fixedNow }
	return &env{t: t, ctx: ctx, obj: obj, cl: cl, svc: svc}
}

func (e *env) create(name string, size uint64) uint32 {
	e.t.Helper()
	info, err := e.svc.New(e.ctx, NewParams{Name: name, Size: size})
	if err != nil {
		e.t.Fatalf("create %q: %v", name, err)
	}
	return info.Vid
}

func (e *env) snapshot(name string, tag string) (working, snap uint32) {
	e.t.Helper()
	cur := e.lookup(name, "", 0)
	if tag != "" {
		e.setTag(cur, tag)
	}
	info, err := e.svc.New(e.ctx, NewParams{Name: name, SnapID: 1, BaseVid: cur})
	if err != nil {
		e.t.Fatalf("snapshot %q: %v", name, err)
	}
	return info.Vid, cur
}

func (e *env) lookup(name, tag string, snapid uint32) uint32 {
	e.t.Helper()
	info, err := e.svc.Lookup(e.ctx, name, tag, snapid)
	if err != nil {
		e.t.Fatalf("lookup %q tag %q snap %d: %v", name, tag, snapid, err)
	}
	return info.Vid
}

func (e *env) inode(vid uint32) *proto.Inode {
	e.t.Helper()
	ino, err := e.svc.readInode(e.ctx, vid)
	if err != nil {
		e.t.Fatalf("read inode %x: %v", vid, err)
	}
	return ino
}

func (e *env) vdiState(vid uint32) proto.VdiState {
	var v proto.VdiState
	e.cl.View(func(s *cluster.State) {
		if p := s.VdiState(vid); p != nil {
			v = *p
		}
	})
	return v
}

// setTag writes a snapshot tag into the inode the way dog does: 256 bytes
// at offset 256, before it sends the snapshot request.
func (e *env) setTag(vid uint32, tag string) {
	e.t.Helper()
	b := make([]byte, proto.MaxVdiTagLen)
	copy(b, tag)
	if err := e.obj.WriteObject(e.ctx, proto.VidToVdiOid(vid), proto.InodeTagOffset, b, 0); err != nil {
		e.t.Fatal(err)
	}
}

// write stores one block at data index idx of vid the way a client does
// (docs/protocol.md §4.5): create, copy-on-write or write the object, then
// point data_vdi_id[idx] at vid.
func (e *env) write(vid, idx uint32, fill byte) {
	e.t.Helper()
	owner := e.inode(vid).DataVdiID[idx]
	data := []byte(strings.Repeat(string(fill), 512))
	oid := proto.VidToDataOid(vid, idx)
	var err error
	switch owner {
	case vid:
		err = e.obj.WriteObject(e.ctx, oid, 0, data, 0)
	case 0:
		err = e.obj.CreateAndWrite(e.ctx, oid, 0, 0, data, 0)
	default:
		err = e.obj.CreateAndWrite(e.ctx, oid, proto.VidToDataOid(owner, idx), 0, data, 0)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], vid)
	// The index update goes where the server sends it: core/vdi, which
	// drops the reference it replaces (core/server's writeObj).
	if err := e.svc.WriteTable(e.ctx, proto.VidToVdiOid(vid), int64(proto.DataVdiIDOff(idx)), b[:], 0); err != nil {
		e.t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err error, want proto.Result) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func TestHashVectors(t *testing.T) {
	for name, want := range map[string]uint32{
		"Alice": hashAlice, "test": hashTest, nameCollidingWithTest: hashTest,
		nameTop: hashTop, nameTop2: hashTop, nameTop3: hashTop, nameTop4: hashTop, nameZero: 1,
	} {
		if got := proto.VdiNameHash(name); got != want {
			t.Fatalf("hash(%q) = %#x, want %#x; the scenarios below depend on it", name, got, want)
		}
	}
}

func TestCreate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		p         NewParams
		wantVid   uint32
		wantCopy  uint8
		wantShift uint8
	}{
		{"name hash", NewParams{Name: "Alice", Size: 1 << 30}, hashAlice, 3, 20},
		{"another name", NewParams{Name: "test", Size: 4 << 20}, hashTest, 3, 20},
		{"hash 0 is vid 1", NewParams{Name: nameZero, Size: 1 << 20}, 1, 3, 20},
		{"own copies and block size", NewParams{Name: "Alice", Size: 1 << 30, Copies: 2, BlockSizeShift: 22}, hashAlice, 2, 22},
		{"longest name", NewParams{Name: strings.Repeat("x", proto.MaxVdiLen-1), Size: 1}, proto.VdiNameHash(strings.Repeat("x", proto.MaxVdiLen-1)), 3, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			info, err := e.svc.New(e.ctx, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if info != (Info{Vid: tc.wantVid, Copies: tc.wantCopy, BlockSizeShift: tc.wantShift}) {
				t.Errorf("info = %+v, want vid %#x copies %d shift %d", info, tc.wantVid, tc.wantCopy, tc.wantShift)
			}
			ino := e.inode(tc.wantVid)
			want := proto.Inode{Name: tc.p.Name, CreateTime: proto.SheepTime(fixedNow), VdiSize: tc.p.Size,
				NrCopies: tc.wantCopy, BlockSizeShift: tc.wantShift, SnapID: 1, VdiID: tc.wantVid}
			ino.DataVdiID = nil
			if !reflect.DeepEqual(*ino, want) {
				t.Errorf("inode = %+v\nwant    %+v", *ino, want)
			}
			if v := e.vdiState(tc.wantVid); v.Vid != tc.wantVid || v.NrCopies != tc.wantCopy || v.BlockSizeShift != tc.wantShift || v.Snapshot || v.Deleted {
				t.Errorf("vdi state = %+v", v)
			}
			if got := e.lookup(tc.p.Name, "", 0); got != tc.wantVid {
				t.Errorf("lookup = %#x, want %#x", got, tc.wantVid)
			}
		})
	}
}

func TestCreateRefused(t *testing.T) {
	e := newEnv(t, 0)
	e.create("test", 1<<20)
	for _, tc := range []struct {
		name string
		p    NewParams
		want proto.Result
	}{
		{"duplicate", NewParams{Name: "test", Size: 1 << 20}, proto.ResVdiExist},
		{"empty name", NewParams{Name: "", Size: 1 << 20}, proto.ResInvalidParms},
		{"name too long", NewParams{Name: strings.Repeat("x", proto.MaxVdiLen), Size: 1}, proto.ResInvalidParms},
		{"block size too small", NewParams{Name: "a", Size: 1, BlockSizeShift: proto.MinBlockSizeShift - 1}, proto.ResInvalidParms},
		{"block size too big", NewParams{Name: "a", Size: 1, BlockSizeShift: proto.MaxBlockSizeShift + 1}, proto.ResInvalidParms},
		{"too big for a flat inode", NewParams{Name: "a", Size: proto.OldMaxVdiSize(20) + 1}, proto.ResInvalidParms},
		{"clone of a missing base", NewParams{Name: "a", BaseVid: 0x123456}, proto.ResNoBaseVdi},
		{"snapshot of a missing VDI", NewParams{Name: "a", SnapID: 1}, proto.ResNoVdi},
		{"rebase onto a missing base", NewParams{Name: "test", SnapID: 1, BaseVid: 0x123456}, proto.ResBaseVdiRead},
	} {
		_, err := e.svc.New(e.ctx, tc.p)
		wantErr(t, tc.name, err, tc.want)
	}
	// Nothing refused took a vid.
	var vids []uint32
	e.cl.View(func(s *cluster.State) { vids = s.SortedVids() })
	if !slices.Equal(vids, []uint32{hashTest}) {
		t.Errorf("vids in use = %x, want only %x", vids, hashTest)
	}
	if e.inode(hashTest).SnapCtime != 0 {
		t.Error("a refused snapshot marked the working VDI a snapshot")
	}
}

func TestLookupUnknown(t *testing.T) {
	e := newEnv(t, 0)
	_, err := e.svc.Lookup(e.ctx, "nope", "", 0)
	wantErr(t, "empty cluster", err, proto.ResNoVdi)
	e.create("test", 1<<20)
	_, err = e.svc.Lookup(e.ctx, nameCollidingWithTest, "", 0)
	wantErr(t, "a name whose slot another name holds", err, proto.ResNoVdi)
	_, err = e.svc.Lookup(e.ctx, "test", "tag", 0)
	wantErr(t, "unknown tag of an existing name", err, proto.ResNoTag)
	_, err = e.svc.Lookup(e.ctx, "test", "", 7)
	wantErr(t, "unknown snapshot id of an existing name", err, proto.ResNoTag)
	_, err = e.svc.Lookup(e.ctx, "nope", "tag", 0)
	wantErr(t, "tag of an unknown name", err, proto.ResNoVdi)
}

// TestProbing walks names whose hashes collide through the linear probe,
// including the wrap from vid 0xffffff to vid 1 (docs/protocol.md §4.3).
func TestProbing(t *testing.T) {
	type step struct {
		name    string
		wantVid uint32
	}
	for _, tc := range []struct {
		name    string
		creates []step
		missing []string
	}{
		{"collision takes the next slot", []step{{"test", hashTest}, {nameCollidingWithTest, hashTest + 1}}, nil},
		{"order decides", []step{{nameCollidingWithTest, hashTest}, {"test", hashTest + 1}}, nil},
		{"a neighbour's slot is skipped", []step{{"test", hashTest}, {nameCollidingWithTest, hashTest + 1}, {"Alice", hashAlice}}, nil},
		{"wrap to vid 1", []step{{nameTop, hashTop}, {nameTop2, 1}, {nameTop3, 2}}, []string{nameTop4}},
		{"wrap past a taken vid 1", []step{{nameZero, 1}, {nameTop, hashTop}, {nameTop2, 2}}, []string{nameTop3}},
		{"vid 1 taken after the wrap", []step{{nameTop, hashTop}, {nameTop2, 1}, {nameZero, 2}}, []string{nameTop3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			for _, s := range tc.creates {
				if got := e.create(s.name, 1<<20); got != s.wantVid {
					t.Fatalf("create %q: vid %#x, want %#x", s.name, got, s.wantVid)
				}
			}
			for _, s := range tc.creates {
				if got := e.lookup(s.name, "", 0); got != s.wantVid {
					t.Errorf("lookup %q = %#x, want %#x", s.name, got, s.wantVid)
				}
			}
			for _, name := range tc.missing {
				_, err := e.svc.Lookup(e.ctx, name, "", 0)
				wantErr(t, "lookup "+name, err, proto.ResNoVdi)
			}
			// Deleting the head of a chain keeps the rest reachable: the
			// in-use bit stays.
			first := tc.creates[0]
			if _, err := e.svc.Delete(e.ctx, first.name, "", 0); err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.creates[1:] {
				if got := e.lookup(s.name, "", 0); got != s.wantVid {
					t.Errorf("after deleting %q: lookup %q = %#x, want %#x", first.name, s.name, got, s.wantVid)
				}
			}
			_, err := e.svc.Lookup(e.ctx, first.name, "", 0)
			wantErr(t, "lookup of the deleted "+first.name, err, proto.ResNoVdi)
		})
	}
}

func TestChain(t *testing.T) {
	top := uint32(proto.NrVdis - 1)
	for _, tc := range []struct {
		left, right uint32
		want        []uint32
	}{
		{10, 11, []uint32{10}},
		{10, 13, []uint32{12, 11, 10}},
		{1, 3, []uint32{2, 1}},
		{top, 1, []uint32{top}},
		{top, 3, []uint32{2, 1, top}},
		{top - 1, 2, []uint32{1, top, top - 1}},
	} {
		got := chain(tc.left, tc.right)
		if len(got) > 10 {
			got = got[:10] // a wrong wrap lists millions of vids
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("chain(%#x, %#x) = %x, want %x", tc.left, tc.right, got, tc.want)
		}
	}
}

// TestSnapshot: the working VDI keeps its vid and becomes the snapshot; a
// new vid becomes the working VDI (docs/protocol.md §4.4, test 029).
// TestFailedSnapshotChangesNothing: a snapshot whose new working inode
// cannot be written (a full store) leaves the VDI as it was: a working
// VDI in the state and on disk, found by name, writable; the new vid is
// given up. The same for a clone of a working VDI.
func TestFailedSnapshotChangesNothing(t *testing.T) {
	e := newEnv(t, 0)
	orig := e.create("test", 8<<20)
	e.write(orig, 0, 'a')
	full := fmt.Errorf("store full: %w", proto.ResNoSpace)
	e.obj.failCreate = func(oid uint64) error {
		if proto.IsVdiObj(oid) {
			return full
		}
		return nil
	}
	_, err := e.svc.New(e.ctx, NewParams{Name: "test", SnapID: 1, BaseVid: orig})
	if !errors.Is(err, proto.ResVdiWrite) {
		t.Fatalf("snapshot on a full store: %v, want VDI_WRITE", err)
	}
	if v := e.vdiState(orig); v.Snapshot || v.Deleted {
		t.Fatalf("after the failed snapshot the VDI's state is %+v", v)
	}
	if ino := e.inode(orig); ino.IsSnapshot() {
		t.Fatalf("after the failed snapshot the inode is marked a snapshot (snap_ctime %x)", ino.SnapCtime)
	}
	if got := e.lookup("test", "", 0); got != orig {
		t.Fatalf("lookup after the failed snapshot: %x, want %x", got, orig)
	}
	if v := e.vdiState(hashTest + 1); !v.Deleted {
		t.Fatalf("the failed snapshot's vid %x is not given up: %+v", hashTest+1, v)
	}

	_, err = e.svc.New(e.ctx, NewParams{Name: "copy", BaseVid: orig})
	if !errors.Is(err, proto.ResVdiWrite) {
		t.Fatalf("clone on a full store: %v, want VDI_WRITE", err)
	}
	if v := e.vdiState(orig); v.Snapshot {
		t.Fatal("a failed clone left its base a snapshot")
	}

	e.obj.failCreate = nil
	e.write(orig, 1, 'b') // a working VDI's data takes writes again
	working, snap := e.snapshot("test", "")
	if snap != orig || e.vdiState(working).ParentVid != orig {
		t.Fatalf("snapshot after space came back: working %x snapshot %x", working, snap)
	}
}

func TestSnapshot(t *testing.T) {
	e := newEnv(t, 0)
	orig := e.create("test", 8<<20)
	e.write(orig, 0, 'a')
	e.write(orig, 5, 'b')

	working, snap := e.snapshot("test", "before-upgrade")
	if snap != orig || working != hashTest+1 {
		t.Fatalf("snapshot: working %#x snapshot %#x, want %#x and %#x", working, snap, hashTest+1, orig)
	}
	old, cur := e.inode(snap), e.inode(working)
	if !old.IsSnapshot() || old.SnapID != 1 || old.Tag != "before-upgrade" || old.Name != "test" {
		t.Errorf("snapshot inode: snapshot %v snap_id %d tag %q name %q", old.IsSnapshot(), old.SnapID, old.Tag, old.Name)
	}
	if old.SnapCtime != proto.SheepTime(fixedNow) {
		t.Errorf("snap_ctime = %x, want %x", old.SnapCtime, proto.SheepTime(fixedNow))
	}
	if cur.IsSnapshot() || cur.SnapID != 2 || cur.ParentVdiID != snap || cur.VdiID != working || cur.Tag != "" || cur.VdiSize != 8<<20 || cur.Name != "test" {
		t.Errorf("working inode: %+v", *cur)
	}
	if cur.DataVdiID[0] != snap || cur.DataVdiID[5] != snap || cur.DataVdiID[1] != 0 {
		t.Errorf("working data_vdi_id[0,1,5] = %x %x %x, want the snapshot's", cur.DataVdiID[0], cur.DataVdiID[1], cur.DataVdiID[5])
	}
	if v := e.vdiState(snap); !v.Snapshot {
		t.Error("cluster state does not mark the old vid a snapshot")
	}
	if v := e.vdiState(working); v.Snapshot || v.ParentVid != snap {
		t.Errorf("cluster state of the working vid: %+v", v)
	}

	for _, tc := range []struct {
		tag    string
		snapid uint32
		want   uint32
	}{
		{"", 0, working},
		{"", 1, snap},
		{"before-upgrade", 0, snap},
	} {
		if got := e.lookup("test", tc.tag, tc.snapid); got != tc.want {
			t.Errorf("lookup tag %q snapid %d = %#x, want %#x", tc.tag, tc.snapid, got, tc.want)
		}
	}
	_, err := e.svc.Lookup(e.ctx, "test", "after-upgrade", 0)
	wantErr(t, "unknown tag", err, proto.ResNoTag)
	_, err = e.svc.Lookup(e.ctx, "test", "", 2)
	wantErr(t, "the working VDI's snap_id is not a snapshot", err, proto.ResNoTag)

	// A second snapshot: snap_id 2 is now a snapshot too.
	working2, snap2 := e.snapshot("test", "")
	if snap2 != working || working2 != hashTest+2 {
		t.Fatalf("second snapshot: working %#x snapshot %#x", working2, snap2)
	}
	if got := e.lookup("test", "", 2); got != snap2 {
		t.Errorf("lookup snapid 2 = %#x, want %#x", got, snap2)
	}
	if got := e.lookup("test", "", 1); got != snap {
		t.Errorf("lookup snapid 1 = %#x, want %#x", got, snap)
	}
	if ino := e.inode(working2); ino.SnapID != 3 || ino.ParentVdiID != snap2 || ino.DataVdiID[0] != snap {
		t.Errorf("third working inode: snap_id %d parent %#x data[0] %#x", ino.SnapID, ino.ParentVdiID, ino.DataVdiID[0])
	}
}

func TestClone(t *testing.T) {
	e := newEnv(t, 0)
	base := e.create("base", 16<<20)
	e.write(base, 0, 'a')
	e.write(base, 3, 'b')
	_, snap := e.snapshot("base", "golden")

	for _, tc := range []struct {
		name     string
		size     uint64
		wantSize uint64
	}{
		{"clone-same-size", 0, 16 << 20},
		{"clone-bigger", 32 << 20, 32 << 20},
	} {
		info, err := e.svc.New(e.ctx, NewParams{Name: tc.name, Size: tc.size, BaseVid: snap})
		if err != nil {
			t.Fatal(err)
		}
		if info.Vid != proto.VdiNameHash(tc.name) {
			t.Errorf("%s: vid %#x, want its name hash", tc.name, info.Vid)
		}
		ino := e.inode(info.Vid)
		if ino.ParentVdiID != snap || ino.SnapID != 1 || ino.VdiSize != tc.wantSize || ino.IsSnapshot() {
			t.Errorf("%s inode: parent %#x snap_id %d size %d", tc.name, ino.ParentVdiID, ino.SnapID, ino.VdiSize)
		}
		if ino.DataVdiID[0] != snap || ino.DataVdiID[3] != snap || ino.DataVdiID[1] != 0 {
			t.Errorf("%s data_vdi_id[0,1,3] = %x %x %x", tc.name, ino.DataVdiID[0], ino.DataVdiID[1], ino.DataVdiID[3])
		}
		if v := e.vdiState(info.Vid); v.ParentVid != snap || v.Snapshot {
			t.Errorf("%s state: %+v", tc.name, v)
		}
	}
	if !e.vdiState(snap).Snapshot {
		t.Error("cloning changed the base's snapshot flag")
	}

	// A clone shares its base's objects: a working VDI used as a base
	// becomes a snapshot (NOTIFY_VDI_ADD with old = base), so that its
	// objects cannot change under the clone.
	other := e.create("other", 4<<20)
	if _, err := e.svc.New(e.ctx, NewParams{Name: "clone-of-working", BaseVid: other}); err != nil {
		t.Fatal(err)
	}
	if !e.vdiState(other).Snapshot {
		t.Error("the base of a clone is still writable")
	}

	// A deleted base has nothing to share.
	if _, err := e.svc.Delete(e.ctx, "base", "golden", 0); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.New(e.ctx, NewParams{Name: "clone-of-deleted", BaseVid: snap})
	wantErr(t, "clone of a deleted snapshot", err, proto.ResNoBaseVdi)
}

// TestRecreateContinuesSnapshots: after the working VDI is deleted, a new
// VDI of the same name continues the numbering (rollback, test 039).
func TestRecreateContinuesSnapshots(t *testing.T) {
	e := newEnv(t, 0)
	e.create("test", 4<<20)
	e.snapshot("test", "")
	working, _ := e.snapshot("test", "")
	if got, err := e.svc.Delete(e.ctx, "test", "", 0); err != nil || got != working {
		t.Fatalf("delete working: %#x %v, want %#x", got, err, working)
	}
	_, err := e.svc.Lookup(e.ctx, "test", "", 0)
	wantErr(t, "lookup after deleting the working VDI", err, proto.ResNoVdi)
	if got := e.lookup("test", "", 2); got != hashTest+1 {
		t.Errorf("snapshot 2 after delete = %#x", got)
	}

	vid := e.create("test", 4<<20)
	if vid != hashTest+3 {
		t.Errorf("recreated vid %#x, want %#x", vid, hashTest+3)
	}
	if ino := e.inode(vid); ino.SnapID != 3 {
		t.Errorf("recreated snap_id %d, want 3 (latest snapshot + 1)", ino.SnapID)
	}
	if got := e.lookup("test", "", 0); got != vid {
		t.Errorf("lookup = %#x, want the new working vid %#x", got, vid)
	}
	if !e.vdiState(hashTest+1).Snapshot || e.vdiState(vid).Snapshot {
		t.Error("snapshot flags changed by the re-create")
	}
}

func TestDelete(t *testing.T) {
	e := newEnv(t, 0)
	vid := e.create("test", 4<<20)
	e.write(vid, 1, 'x')
	got, err := e.svc.Delete(e.ctx, "test", "", 0)
	if err != nil || got != vid {
		t.Fatalf("delete: %#x %v", got, err)
	}
	ino := e.inode(vid)
	if ino.Name != "" || ino.VdiSize != 0 || lastNonZero(ino.DataVdiID) != -1 {
		t.Errorf("deleted inode keeps name %q size %d table up to %d", ino.Name, ino.VdiSize, lastNonZero(ino.DataVdiID))
	}
	if ino.VdiID != vid || ino.SnapID != 1 {
		t.Errorf("deleted inode lost its identity: vid %#x snap_id %d", ino.VdiID, ino.SnapID)
	}
	var inuse, deleted bool
	e.cl.View(func(s *cluster.State) { inuse, deleted = s.InUse(vid), s.IsDeleted(vid) })
	if !inuse || !deleted {
		t.Errorf("in-use %v deleted %v, want both", inuse, deleted)
	}
	if e.obj.has(proto.VidToDataOid(vid, 1)) {
		t.Error("the deleted VDI's data object is still there")
	}
	_, err = e.svc.Delete(e.ctx, "test", "", 0)
	wantErr(t, "second delete", err, proto.ResNoVdi)
	_, err = e.svc.Delete(e.ctx, "never", "", 0)
	wantErr(t, "delete of an unknown name", err, proto.ResNoVdi)
}

// TestDeleteReclaims: deleting a VDI removes the data objects nothing
// else references; objects a snapshot or clone still uses stay until the
// last user is gone.
func TestDeleteReclaims(t *testing.T) {
	e := newEnv(t, 0)
	a := e.create("disk", 16<<20)
	e.write(a, 0, '0')
	e.write(a, 1, '1')
	w, s := e.snapshot("disk", "snap")
	e.write(w, 1, 'W') // copy-on-write of (s,1)
	e.write(w, 2, 'N') // new object
	info, err := e.svc.New(e.ctx, NewParams{Name: "clone", BaseVid: s})
	if err != nil {
		t.Fatal(err)
	}
	c := info.Vid
	e.write(c, 3, 'C')

	oid := proto.VidToDataOid
	steps := []struct {
		name, tag string
		snapid    uint32
		want      []uint64
	}{
		{"", "", 0, []uint64{oid(s, 0), oid(s, 1), oid(w, 1), oid(w, 2), oid(c, 3)}},
		// The working VDI's own objects go; (s,0) is shared with s and c.
		{"disk", "", 0, []uint64{oid(s, 0), oid(s, 1), oid(c, 3)}},
		// The snapshot's objects stay: the clone reads them.
		{"disk", "snap", 0, []uint64{oid(s, 0), oid(s, 1), oid(c, 3)}},
		// The last user is gone.
		{"clone", "", 0, nil},
	}
	for _, st := range steps {
		if st.name != "" {
			if _, err := e.svc.Delete(e.ctx, st.name, st.tag, st.snapid); err != nil {
				t.Fatalf("delete %q tag %q: %v", st.name, st.tag, err)
			}
		}
		slices.Sort(st.want)
		if got := e.obj.dataOids(); !slices.Equal(got, st.want) {
			t.Errorf("after deleting %q tag %q: data objects %x, want %x", st.name, st.tag, got, st.want)
		}
	}
	// The inodes stay, so every probe chain is intact.
	for _, vid := range []uint32{a, w, c} {
		if !e.obj.has(proto.VidToVdiOid(vid)) {
			t.Errorf("inode %#x removed", vid)
		}
	}
}

func TestLocking(t *testing.T) {
	other := proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.2:7000"))
	t.Run("with -l", func(t *testing.T) {
		e := newEnv(t, proto.ClusterFlagUseLock)
		vid := e.create("test", 1<<20)
		if err := e.svc.Lock(e.ctx, vid, self.NodeID); err != nil {
			t.Fatal(err)
		}
		if v := e.vdiState(vid); v.LockState != proto.LockStateLocked || v.LockOwner != self.NodeID {
			t.Errorf("after lock: %+v", v)
		}
		wantErr(t, "lock by another node", e.svc.Lock(e.ctx, vid, other), proto.ResVdiLocked)
		if err := e.svc.Release(e.ctx, vid); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Release(e.ctx, vid); err != nil {
			t.Errorf("release of an unlocked VDI: %v", err)
		}
		if err := e.svc.Lock(e.ctx, vid, other); err != nil {
			t.Errorf("lock after release: %v", err)
		}
		wantErr(t, "lock of an unknown vid", e.svc.Lock(e.ctx, 0x42, self.NodeID), proto.ResNoVdi)
		wantErr(t, "release of an unknown vid", e.svc.Release(e.ctx, 0x42), proto.ResNoVdi)
	})
	t.Run("without -l", func(t *testing.T) {
		e := newEnv(t, 0)
		vid := e.create("test", 1<<20)
		for _, owner := range []proto.NodeID{self.NodeID, other} {
			if err := e.svc.Lock(e.ctx, vid, owner); err != nil {
				t.Errorf("lock without -l: %v", err)
			}
		}
		if v := e.vdiState(vid); v.LockState != proto.LockStateUnlocked {
			t.Errorf("lock without -l recorded a lock: %+v", v)
		}
		if err := e.svc.Release(e.ctx, vid); err != nil {
			t.Errorf("release without -l: %v", err)
		}
	})
}

// TestConcurrentCreates: parallel creates, with colliding names among
// them, all get distinct vids and all resolve.
func TestConcurrentCreates(t *testing.T) {
	e := newEnv(t, 0)
	names := []string{"test", nameCollidingWithTest, nameTop, nameTop2, nameTop3, "Alice"}
	for i := 0; i < 10; i++ {
		names = append(names, fmt.Sprintf("vm-%d", i))
	}
	vids := make([]uint32, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := e.svc.New(e.ctx, NewParams{Name: name, Size: 1 << 20})
			if err != nil {
				t.Errorf("create %q: %v", name, err)
			}
			vids[i] = info.Vid
		}()
	}
	wg.Wait()
	seen := map[uint32]string{}
	for i, name := range names {
		if other, dup := seen[vids[i]]; dup {
			t.Errorf("%q and %q both got vid %#x", name, other, vids[i])
		}
		seen[vids[i]] = name
		if got := e.lookup(name, "", 0); got != vids[i] {
			t.Errorf("lookup %q = %#x, want %#x", name, got, vids[i])
		}
	}
}

// racingDriver plays another node that registers a vid between this
// node's lookup and its proposal: the first AddVdi proposal it sees is
// preceded by one for the same vid.
type racingDriver struct {
	cluster.Driver
	mu    sync.Mutex
	armed bool
	stole []uint32
}

func (d *racingDriver) Propose(ctx context.Context, e *cluster.Entry) (proto.Result, error) {
	d.mu.Lock()
	if d.armed && e.Kind == cluster.KindAddVdi {
		d.armed = false
		d.stole = append(d.stole, e.Vid)
		if res, err := d.Driver.Propose(ctx, &cluster.Entry{Kind: cluster.KindAddVdi, Vid: e.Vid}); err != nil || res != proto.ResSuccess {
			d.mu.Unlock()
			return res, err
		}
	}
	d.mu.Unlock()
	return d.Driver.Propose(ctx, e)
}

func TestSlotTakenConcurrently(t *testing.T) {
	l, err := cluster.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &racingDriver{Driver: l}
	e := newEnvOver(t, d, 0)
	// The thief never writes its inode (a creator that died): the retry
	// waits for it only this long before creating past it.
	defer func(w time.Duration) { pendingWait = w }(pendingWait)
	pendingWait = 100 * time.Millisecond

	d.armed = true
	vid := e.create("test", 4<<20)
	if !slices.Equal(d.stole, []uint32{hashTest}) || vid != hashTest+1 {
		t.Fatalf("create with its slot stolen: vid %#x (stolen %x), want %#x", vid, d.stole, hashTest+1)
	}
	if got := e.lookup("test", "", 0); got != vid {
		t.Errorf("lookup = %#x, want %#x", got, vid)
	}

	// The same race during a snapshot: the retry must still find the
	// working VDI and snapshot it.
	e.write(vid, 0, 'a')
	d.armed = true
	info, err := e.svc.New(e.ctx, NewParams{Name: "test", SnapID: 1, BaseVid: vid})
	if err != nil {
		t.Fatalf("snapshot with its slot stolen: %v", err)
	}
	if info.Vid != hashTest+3 {
		t.Errorf("snapshot's new working vid %#x, want %#x", info.Vid, hashTest+3)
	}
	if got := e.lookup("test", "", 1); got != vid {
		t.Errorf("lookup snapshot 1 = %#x, want %#x", got, vid)
	}
	if got := e.lookup("test", "", 0); got != info.Vid {
		t.Errorf("lookup working = %#x, want %#x", got, info.Vid)
	}
	if ino := e.inode(info.Vid); ino.SnapID != 2 || ino.DataVdiID[0] != vid {
		t.Errorf("new working inode: snap_id %d data[0] %#x", ino.SnapID, ino.DataVdiID[0])
	}
}
