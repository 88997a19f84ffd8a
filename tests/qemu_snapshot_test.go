package tests

// QEMU's snapshot flows against our sheep: create, list, goto, branch,
// delete, copy-on-write, the READONLY reload, clone from NAME:SNAPID,
// vmstate and discard (docs/qemu-client.md §8.4, §8.8, §8.11–§8.16, §9).

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mustSnapshot runs QEMU's snapshot create on img.
func (img *qemuImage) mustSnapshot(tag string) uint32 {
	img.t.Helper()
	vid, res := img.snapshotCreate(tag, 0, 0)
	if res != sdResSuccess {
		img.t.Fatalf("snapshot %s of %s: result %#x", tag, img.name, res)
	}
	return vid
}

// inodeOf reads vid's inode through QEMU's open-time read.
func (d *qemuDriver) inodeOf(vid uint32) (sdInode, []uint32) {
	d.t.Helper()
	b := d.readInode(vid, 0, sdFlagCache)
	return sdInode(b[:sdInodeHeaderSize]), sdDecodeIndex(b[sdInodeHeaderSize:])
}

// TestQemuSnapshotCreate replays `qemu-img snapshot -c t1`: the whole
// 4664-byte header rewritten with the tag, vm_state_size and vm_clock,
// then NEW_VDI snapid 1 on the working vid. The old vid keeps the tag and
// becomes the snapshot; the reply names a new working VDI with an empty
// tag, a copy of the index, parent = old, snap_id + 1.
func TestQemuSnapshotCreate(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	data := randomBytes(6 << 20)
	img.mustWrite(0, data)

	newVid, res := img.snapshotCreate("t1", 12345, 999)
	if res != sdResSuccess || newVid != h+1 {
		t.Fatalf("snapshot: vid %x result %#x, want %x", newVid, res, h+1)
	}
	snap, sidx := d.inodeOf(h)
	if snap.name() != "Alice" || snap.tag() != "t1" || snap.snapCtime() == 0 || snap.snapID() != 1 ||
		snap.vmStateSize() != 12345 || snap.vmClock() != 999 {
		t.Fatalf("snapshot inode: name %q tag %q snap_ctime %x snap_id %d vm_state_size %d vm_clock %d",
			snap.name(), snap.tag(), snap.snapCtime(), snap.snapID(), snap.vmStateSize(), snap.vmClock())
	}
	if sec := int64(snap.snapCtime() >> 32); time.Since(time.Unix(sec, 0)) > time.Hour {
		t.Errorf("snap_ctime %x is not sec<<32|nsec of now", snap.snapCtime())
	}
	work, widx := d.inodeOf(newVid)
	if work.name() != "Alice" || work.tag() != "" || work.snapCtime() != 0 || work.snapID() != 2 ||
		work.parent() != h || work.vid() != newVid || work.vdiSize() != 64<<20 || work.nrCopies() != 1 {
		t.Fatalf("new working inode: name %q tag %q snap_ctime %x snap_id %d parent %x vid %x size %d",
			work.name(), work.tag(), work.snapCtime(), work.snapID(), work.parent(), work.vid(), work.vdiSize())
	}
	if widx[0] != h || widx[1] != h || widx[2] != 0 || sidx[0] != h || sidx[1] != h {
		t.Fatalf("indexes: working %x snapshot %x", widx[:3], sidx[:3])
	}
	// QEMU took the new header and kept its own index.
	if img.vid() != newVid || img.index[0] != h {
		t.Fatalf("in-memory: vid %x index[0] %x", img.vid(), img.index[0])
	}
	// The next write copies on write from the snapshot.
	if w := img.dataWrite(0, 0, nil); w.hdr.opcode != sdOpCreateAndWrite || w.hdr.flags != sdFlagWrite|sdFlagCow|sdFlagCache || w.hdr.cowOid != sdDataOid(h, 0) {
		t.Fatalf("write after the snapshot: op %#x flags %#x cow_oid %016x", w.hdr.opcode, w.hdr.flags, w.hdr.cowOid)
	}
	// Close releases the new vid (QEMU never releases the old one).
	img.mustClose()

	// A second snapshot from a fresh open.
	img = d.mustOpen("Alice")
	if v := img.mustSnapshot("t2"); v != h+2 {
		t.Fatalf("second snapshot: new vid %x, want %x", v, h+2)
	}
	img.mustClose()
	list := s.must(t, nil, "vdi", "list", "-r", "Alice")
	for _, want := range []string{"s Alice 1 67108864 ", "s Alice 2 67108864 ", "= Alice 0 67108864 "} {
		if !strings.Contains(list, want) {
			t.Errorf("vdi list lacks %q:\n%s", want, list)
		}
	}
	if got := collieReadAt(t, s, "Alice", 0, len(data), "-s", "t1"); !bytes.Equal(got, data) {
		t.Fatal("snapshot t1 reads other bytes")
	}
}

// sdNameWithHash finds a VDI name whose vid hash is want.
func sdNameWithHash(t *testing.T, want uint32) string {
	t.Helper()
	buf := []byte("z")
	for i := 0; i < 1<<28; i++ {
		b := strconv.AppendInt(buf[:1], int64(i), 36)
		if uint32(sdFnv1a64(b)&(sdNrVdis-1)) == want {
			return string(b)
		}
	}
	t.Fatalf("no name hashes to %x", want)
	return ""
}

// TestQemuSnapshotList replays `qemu-img snapshot -l`: READ_VDIS, then the
// headers of consecutive vids from the name hash until the first clear
// bit. Another name sits inside Alice's run of vids (linear probing), so
// the walk must step over it; deleted snapshots are not listed.
func TestQemuSnapshotList(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	other := sdNameWithHash(t, h+1)
	if v := d.mustCreate(other, qemuCreateOpts{size: 8 << 20}); v != h+1 {
		t.Fatalf("%s got vid %x, want %x", other, v, h+1)
	}
	if got := d.snapshotList("Alice"); len(got) != 0 {
		t.Fatalf("no snapshots yet, listed %+v", got)
	}
	img := d.mustOpen("Alice")
	img.mustWrite(0, []byte("first"))
	if v := img.mustSnapshot("a"); v != h+2 {
		t.Fatalf("working VDI after the first snapshot: %x, want %x (past %s)", v, h+2, other)
	}
	img.mustWrite(0, []byte("second"))
	vmSize := uint64(4 << 20)
	if _, res := img.snapshotCreate("b", vmSize, 7); res != sdResSuccess {
		t.Fatalf("snapshot b: %#x", res)
	}
	img.mustClose()

	got := d.snapshotList("Alice")
	if len(got) != 2 || got[0].vid != h || got[0].id != 1 || got[0].tag != "a" ||
		got[1].vid != h+2 || got[1].id != 2 || got[1].tag != "b" || got[1].vmSize != vmSize {
		t.Fatalf("snapshot list: %+v", got)
	}
	for _, sn := range got {
		if time.Since(time.Unix(int64(sn.date>>32), int64(uint32(sn.date)))) > time.Hour {
			t.Errorf("snapshot %d date %x", sn.id, sn.date)
		}
	}
	if l := d.snapshotList(other); len(l) != 0 {
		t.Fatalf("%s has no snapshots, listed %+v", other, l)
	}

	s.must(t, nil, "vdi", "delete", "-s", "a", "Alice")
	if got := d.snapshotList("Alice"); len(got) != 1 || got[0].tag != "b" {
		t.Fatalf("after deleting a: %+v", got)
	}
	if got := collieReadAt(t, s, "Alice", 0, 6, "-s", "b"); string(got) != "second" {
		t.Fatalf("snapshot b reads %q", got)
	}
}

// TestQemuSnapshotGoto replays `qemu-img snapshot -a`: DEL_VDI of a
// working VDI whose index still names its objects (QEMU does not zero it),
// then NEW_VDI from the snapshot. Sheepdog 1.0 answers the DEL_VDI SUCCESS
// without deleting and the NEW_VDI fails with VDI_EXIST; our sheep must
// really delete (docs/protocol.md §12) and reclaim the dropped objects. Writing
// to an image opened as NAME:SNAPID branches the same way (§8.14).
func TestQemuSnapshotGoto(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	a := randomBytes(8 << 20)
	img.mustWrite(0, a)
	w1 := img.mustSnapshot("a")
	img.mustWrite(4096, []byte("changed after the snapshot"))
	img.mustWrite(8<<20, []byte("a new object"))
	if !hasObjectFile(s, sdDataOid(w1, 0)) || !hasObjectFile(s, sdDataOid(w1, 2)) {
		t.Fatal("the working VDI's own objects are missing")
	}

	if err := img.gotoSnapshot(0, "a"); err != nil {
		t.Fatal(err)
	}
	w2 := img.vid()
	if w2 != h+2 || img.index[0] != h || img.index[2] != 0 {
		t.Fatalf("after goto: vid %x index %x", w2, img.index[:3])
	}
	if v := img.view(); v.parent() != h || v.snapID() != 2 || v.snapCtime() != 0 {
		t.Fatalf("after goto: parent %x snap_id %d snap_ctime %x", v.parent(), v.snapID(), v.snapCtime())
	}
	if got := img.mustRead(0, len(a)+4096); !bytes.Equal(got, append(a, make([]byte, 4096)...)) {
		t.Fatal("after goto the image does not read as the snapshot")
	}
	if hasObjectFile(s, sdDataOid(w1, 0)) || hasObjectFile(s, sdDataOid(w1, 2)) {
		t.Fatal("objects of the deleted working VDI were not reclaimed")
	}
	if !hasObjectFile(s, sdDataOid(h, 0)) {
		t.Fatal("the snapshot lost an object")
	}
	img.mustWrite(0, []byte("third"))
	img.mustClose()

	// Again by snapshot id.
	img = d.mustOpen("Alice")
	if err := img.gotoSnapshot(1, ""); err != nil {
		t.Fatal(err)
	}
	img.mustClose()
	if got := collieReadAt(t, s, "Alice", 0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("collie: the working VDI does not read as the snapshot after goto")
	}
	list := s.must(t, nil, "vdi", "list", "-r", "Alice")
	if strings.Count(list, "\n") != 2 || !strings.HasPrefix(list, "s Alice 1 ") || !strings.Contains(list, "\n= Alice 0 ") {
		t.Fatalf("vdi list after two gotos:\n%s", list)
	}

	t.Run("write to NAME:SNAPID", func(t *testing.T) {
		d := newQemuDriver(t, s)
		snap, res := d.open("Alice", 1, "")
		if res != sdResSuccess || snap.vid() != h || !snap.isSnapshot {
			t.Fatalf("open Alice:1: result %#x vid %x", res, snap.vid())
		}
		if got := snap.mustRead(0, 4096); !bytes.Equal(got, a[:4096]) {
			t.Fatal("Alice:1 reads other bytes")
		}
		snap.mustWrite(0, []byte("branch"))
		if snap.isSnapshot || snap.vid() == h || snap.view().parent() != h {
			t.Fatalf("after the first write: vid %x parent %x", snap.vid(), snap.view().parent())
		}
		snap.mustClose()
		want := append([]byte("branch"), a[6:4096]...)
		if got := collieReadAt(t, s, "Alice", 0, 4096); !bytes.Equal(got, want) {
			t.Fatal("the branch did not become the working VDI Alice")
		}
		if got := collieReadAt(t, s, "Alice", 0, 4096, "-s", "1"); !bytes.Equal(got, a[:4096]) {
			t.Fatal("the snapshot changed")
		}
	})
}

// TestQemuSnapshotDelete replays `qemu-img snapshot -d ID`, QEMU bug
// included: the open working VDI's index is zeroed first, then LOCK_VDI of
// the snapshot and DEL_VDI name+tag with its id. Objects the remaining
// snapshot still references stay; the others are reclaimed.
func TestQemuSnapshotDelete(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	a := randomBytes(8 << 20)
	img.mustWrite(0, a)
	b1 := img.mustSnapshot("a") // h is snapshot 1
	img.mustWrite(4<<20, []byte("B"))
	img.mustSnapshot("b") // b1 is snapshot 2, its object 1 is its own
	if res := img.snapshotDelete(1); res != sdResSuccess {
		t.Fatalf("snapshot delete 1: result %#x", res)
	}
	if got := d.snapshotList("Alice"); len(got) != 1 || got[0].vid != b1 || got[0].id != 2 {
		t.Fatalf("snapshot list after delete: %+v", got)
	}
	// QEMU zeroed the working index: the image reads as zeros.
	if got := img.mustRead(0, 8<<20); !bytes.Equal(got, make([]byte, 8<<20)) {
		t.Fatal("the working VDI should read zeros after QEMU's index wipe")
	}
	img.mustClose()
	if got := collieReadAt(t, s, "Alice", 0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("collie: the working VDI should read zeros")
	}
	want := append(a[:4<<20:4<<20], 'B')
	want = append(want, a[4<<20+1:]...)
	if got := collieReadAt(t, s, "Alice", 0, len(a), "-s", "2"); !bytes.Equal(got, want) {
		t.Fatal("snapshot 2 changed")
	}
	if !hasObjectFile(s, sdDataOid(h, 0)) {
		t.Fatal("object 0 of the deleted snapshot is still used by snapshot 2, yet it is gone")
	}
	if hasObjectFile(s, sdDataOid(h, 1)) {
		t.Fatal("object 1 of the deleted snapshot is referenced by nobody, yet it is kept")
	}
	if list := s.must(t, nil, "vdi", "list", "-r", "Alice"); strings.Contains(list, "s Alice 1 ") {
		t.Fatalf("vdi list still shows snapshot 1:\n%s", list)
	}
	img = d.mustOpen("Alice")
	if res := img.snapshotDelete(9); res == sdResSuccess {
		t.Fatal("deleting a missing snapshot succeeded")
	}
	img.mustClose()
}

// TestQemuCOWAfterSnapshot: after a snapshot, a partial write to an object
// the snapshot owns is CREATE_AND_WRITE + COW; the sheep copies the whole
// parent object, then applies the write. The snapshot keeps its bytes.
func TestQemuCOWAfterSnapshot(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	a := randomBytes(12 << 20)
	img.mustWrite(0, a)
	w := img.mustSnapshot("s1")

	patch := randomBytes(4096)
	req := img.dataWrite(0, 8192, patch)
	if !req.create || req.hdr.flags != sdFlagWrite|sdFlagCow|sdFlagCache || req.hdr.cowOid != sdDataOid(h, 0) || req.hdr.oid != sdDataOid(w, 0) {
		t.Fatalf("COW write: op %#x flags %#x oid %016x cow %016x", req.hdr.opcode, req.hdr.flags, req.hdr.oid, req.hdr.cowOid)
	}
	img.mustWrite(8192, patch)
	whole := randomBytes(4 << 20) // a COW create covering the whole object
	img.mustWrite(4<<20, whole)
	if img.index[0] != w || img.index[1] != w || img.index[2] != h {
		t.Fatalf("index after COW: %x", img.index[:3])
	}
	want := append([]byte{}, a...)
	copy(want[8192:], patch)
	copy(want[4<<20:], whole)
	if got := img.mustRead(0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("COW object does not read parent bytes plus the write")
	}
	img.mustClose()
	if got := collieReadAt(t, s, "Alice", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("collie: working VDI differs")
	}
	if got := collieReadAt(t, s, "Alice", 0, len(a), "-s", "s1"); !bytes.Equal(got, a) {
		t.Fatal("the snapshot changed under COW")
	}
	snap, _ := d.open("Alice", 0, "s1")
	if got := snap.mustRead(0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("QEMU open of Alice:s1 reads other bytes")
	}
	snap.mustClose()
}

// TestQemuReadonly: `collie vdi snapshot` while QEMU has the image open
// moves the working VDI under it. QEMU's next writes name the old vid and
// get READONLY; it reloads the inode (GET_VDI_INFO snapid 0 + header) and
// resends each request with its id to the new vid, a write to an object
// it owned becoming a COW create, and the index update going to the new
// inode.
func TestQemuReadonly(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("ro1", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("ro1")
	a := randomBytes(12 << 20)
	img.mustWrite(0, a)

	s.must(t, nil, "vdi", "snapshot", "-s", "dogsnap", "ro1")
	newVid, res := d.findVdi(sdOpGetVdiInfo, "ro1", "", 0)
	if res != sdResSuccess || newVid == h {
		t.Fatalf("after collie snapshot: working vid %x result %#x", newVid, res)
	}

	// One guest write over the end of object 2 (owned by the old vid, so
	// WRITE_OBJ) and into object 3 (a hole, so CREATE), both to the old vid.
	patch := randomBytes(8192)
	reqs := []*aioReq{img.dataWrite(2, 4<<20-4096, patch[:4096]), img.dataWrite(3, 0, patch[4096:])}
	if reqs[0].hdr.opcode != sdOpWriteObj || reqs[1].hdr.opcode != sdOpCreateAndWrite || sdOidVid(reqs[1].hdr.oid) != h {
		t.Fatal("requests not built against the old vid")
	}
	img.io.submit(reqs...)
	ids := []uint32{reqs[0].hdr.id, reqs[1].hdr.id}
	for _, r := range reqs {
		if err := img.wait(r); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	if img.vid() != newVid {
		t.Fatalf("QEMU did not reload: vid %x", img.vid())
	}
	for i, r := range reqs {
		if r.hdr.id != ids[i] || sdOidVid(r.hdr.oid) != newVid || !r.create {
			t.Fatalf("resent %s: want id %d, a create on %x", r, ids[i], newVid)
		}
	}
	if reqs[0].hdr.flags&sdFlagCow == 0 || reqs[0].hdr.cowOid != sdDataOid(h, 2) || reqs[1].hdr.flags&sdFlagCow != 0 {
		t.Fatalf("resend: object 2 flags %#x cow %016x, object 3 flags %#x", reqs[0].hdr.flags, reqs[0].hdr.cowOid, reqs[1].hdr.flags)
	}
	img.index[2], img.index[3] = newVid, newVid
	if err := img.updateIndex(2, 3); err != nil {
		t.Fatal(err)
	}
	if _, idx := d.inodeOf(newVid); idx[2] != newVid || idx[3] != newVid || idx[0] != h {
		t.Fatalf("new inode index %x", idx[:4])
	}
	// Later writes through the whole path (READONLY → reload is done).
	img.mustWrite(0, []byte("after"))
	img.mustClose()

	want := append([]byte{}, a...)
	copy(want, "after")
	copy(want[12<<20-4096:], patch[:4096])
	want = append(want, patch[4096:]...)
	if got := collieReadAt(t, s, "ro1", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("collie: ro1 differs after the READONLY resend")
	}
	if got := collieReadAt(t, s, "ro1", 0, len(a), "-s", "dogsnap"); !bytes.Equal(got, a) {
		t.Fatal("the dog snapshot changed")
	}

	// The snapshot lands between a CREATE's reply and its index update:
	// the update names the old vid's inode, now a snapshot's. A snapshot's
	// table never gains references, so the sheep answers READONLY and
	// QEMU resends the update to the working VDI; had it been written
	// into the snapshot, the working VDI would have lost the object.
	t.Run("index update after the snapshot", func(t *testing.T) {
		d := newQemuDriver(t, s)
		h := d.mustCreate("ro2", qemuCreateOpts{size: 64 << 20})
		img := d.mustOpen("ro2")
		data := randomBytes(4096)
		c := img.dataWrite(5, 0, data)
		img.io.submit(c)
		if err := img.wait(c); err != nil {
			t.Fatal(err)
		}
		s.must(t, nil, "vdi", "snapshot", "-s", "between", "ro2")
		img.index[5] = h
		if err := img.updateIndex(5, 5); err != nil {
			t.Fatalf("index update: %v", err)
		}
		if img.vid() == h {
			t.Fatal("the index update went to the snapshot without a READONLY")
		}
		img.mustClose()
		if _, idx := d.inodeOf(h); idx[5] != 0 {
			t.Fatalf("the snapshot's table gained entry 5 = %x", idx[5])
		}
		if got := collieReadAt(t, s, "ro2", 5<<22, 4096); !bytes.Equal(got, data) {
			t.Fatal("the working VDI lost the object written before the snapshot")
		}
	})
}

// TestQemuClone replays `qemu-img create -b sheepdog:Alice:1
// sheepdog:Charlie`: the backing snapshot opened twice (LOCK_VDI snapid 1,
// whole inode, RELEASE), its snap_ctime checked, GET_CLUSTER_DEFAULT,
// NEW_VDI with base = the snapshot's vid. The clone reads the snapshot's
// objects directly and copies on write.
func TestQemuClone(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	a := randomBytes(8 << 20)
	img.mustWrite(0, a)
	img.mustSnapshot("one")
	img.mustWrite(0, []byte("working copy moved on"))
	img.mustClose()

	var size uint64
	for range 2 {
		base, res := d.open("Alice", 1, "")
		if res != sdResSuccess || base.vid() != h {
			t.Fatalf("open Alice:1: result %#x", res)
		}
		if base.view().snapCtime() == 0 {
			t.Fatal("Alice:1 is not a snapshot")
		}
		size = base.view().vdiSize()
		base.mustClose()
	}
	cv := d.mustCreate("Charlie", qemuCreateOpts{size: size, base: h})
	if cv != sdNameHash("Charlie") {
		t.Fatalf("Charlie vid %x", cv)
	}
	c := d.mustOpen("Charlie")
	if v := c.view(); v.parent() != h || v.snapID() != 1 || c.index[0] != h || c.index[1] != h || c.index[2] != 0 {
		t.Fatalf("clone inode: parent %x snap_id %d index %x", v.parent(), v.snapID(), c.index[:3])
	}
	if got := c.mustRead(0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("the clone does not read the snapshot's bytes")
	}
	req := c.dataWrite(0, 0, nil)
	if req.hdr.flags != sdFlagWrite|sdFlagCow|sdFlagCache || req.hdr.cowOid != sdDataOid(h, 0) || req.hdr.oid != sdDataOid(cv, 0) {
		t.Fatalf("clone write: flags %#x oid %016x cow %016x", req.hdr.flags, req.hdr.oid, req.hdr.cowOid)
	}
	c.mustWrite(0, []byte("Charlie"))
	c.mustClose()
	want := append([]byte("Charlie"), a[7:]...)
	if got := collieReadAt(t, s, "Charlie", 0, len(a)); !bytes.Equal(got, want) {
		t.Fatal("collie: Charlie differs")
	}
	if got := collieReadAt(t, s, "Alice", 0, len(a), "-s", "1"); !bytes.Equal(got, a) {
		t.Fatal("the clone changed its base snapshot")
	}
	if row := s.must(t, nil, "vdi", "list", "-r", "Charlie"); !strings.HasPrefix(row, "c Charlie 0 67108864 ") {
		t.Fatalf("vdi list -r Charlie: %q", row)
	}
}

// TestQemuVMState replays savevm/loadvm: vmstate objects of the current
// vid written on a side connection (CREATE at an object start, WRITE_OBJ
// inside), a snapshot recording vm_state_size, goto, then the state read
// back from parent_vdi_id's vmstate objects.
func TestQemuVMState(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("vm", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("vm")
	img.mustWrite(0, []byte("disk"))
	state := randomBytes(7 << 20)
	img.saveVMState(0, state[:6<<20])     // CREATE object 0, CREATE object 1 (2 MiB)
	img.saveVMState(6<<20, state[6<<20:]) // WRITE_OBJ into object 1 at 2 MiB
	if !hasObjectFile(s, sdVmstateOid(h, 0)) || !hasObjectFile(s, sdVmstateOid(h, 1)) {
		t.Fatal("vmstate objects not stored")
	}
	if _, res := img.snapshotCreate("vm1", uint64(len(state)), 42); res != sdResSuccess {
		t.Fatalf("snapshot: %#x", res)
	}
	img.mustWrite(0, []byte("DISK"))
	if l := d.snapshotList("vm"); len(l) != 1 || l[0].vmSize != uint64(len(state)) {
		t.Fatalf("snapshot list: %+v", l)
	}
	img.mustClose()

	// loadvm: goto, then read the state of the parent.
	img = d.mustOpen("vm")
	if err := img.gotoSnapshot(0, "vm1"); err != nil {
		t.Fatal(err)
	}
	if img.view().parent() != h {
		t.Fatalf("parent %x", img.view().parent())
	}
	if got := img.loadVMState(0, len(state)); !bytes.Equal(got, state) {
		t.Fatal("loaded vmstate differs")
	}
	if got := img.mustRead(0, 4); string(got) != "disk" {
		t.Fatalf("disk after loadvm: %q", got)
	}
	img.mustClose()
}

// TestQemuDiscard replays discard: 4 zero bytes into data_vdi_id[idx] for
// each fully covered allocated object, nothing else. The sheep answers
// SUCCESS (not INVALID_PARMS, which would turn discard off) and reclaims
// an object nobody references; one a snapshot still uses stays.
func TestQemuDiscard(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("Alice")
	data := randomBytes(16 << 20)
	img.mustWrite(0, data)
	// [4 MiB - 512, 16 MiB - 512): objects 1 and 2 fully, 0 and 3 partly.
	if err := img.discard(4<<20-512, 12<<20); err != nil {
		t.Fatalf("discard: %v", err)
	}
	if img.index[0] != h || img.index[1] != 0 || img.index[2] != 0 || img.index[3] != h {
		t.Fatalf("index after discard: %x", img.index[:4])
	}
	if _, idx := d.inodeOf(h); idx[1] != 0 || idx[2] != 0 || idx[3] != h {
		t.Fatalf("stored index after discard: %x", idx[:4])
	}
	if hasObjectFile(s, sdDataOid(h, 1)) || hasObjectFile(s, sdDataOid(h, 2)) {
		t.Fatal("discarded objects were not reclaimed")
	}
	if !hasObjectFile(s, sdDataOid(h, 0)) || !hasObjectFile(s, sdDataOid(h, 3)) {
		t.Fatal("partly covered objects were removed")
	}
	want := append([]byte{}, data...)
	clear(want[4<<20 : 12<<20])
	if got := img.mustRead(0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("QEMU read after discard differs")
	}

	// After a snapshot, discarding a shared object drops only the working
	// VDI's reference.
	img.mustSnapshot("keep")
	if err := img.discard(0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if !hasObjectFile(s, sdDataOid(h, 0)) {
		t.Fatal("an object the snapshot owns was reclaimed")
	}
	img.mustClose()
	clear(want[:4<<20])
	if got := collieReadAt(t, s, "Alice", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("collie read after discard differs")
	}
	snapWant := append([]byte{}, data...)
	clear(snapWant[4<<20 : 12<<20])
	if got := collieReadAt(t, s, "Alice", 0, len(snapWant), "-s", "keep"); !bytes.Equal(got, snapWant) {
		t.Fatal("the snapshot changed")
	}
}
