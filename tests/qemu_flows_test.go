package tests

// Conformance of our sheep with QEMU 5.2's sheepdog driver, flow by flow
// (docs/qemu-client.md §8). The driver emulation is in qemu_wire_test.go
// (headers, side connections), qemu_image_test.go (an open image) and
// qemu_ioconn_test.go (the pipelined I/O connection and its reconnect).
//
// Covered: create (GET_CLUSTER_DEFAULT, NEW_VDI, preallocation), open /
// lock / close over TCP and the unix socket, 64 requests in flight with
// out-of-order replies, FLUSH_VDI → INVALID_PARMS → DIRECT, redundancy=N,
// object_size, resize (this file); snapshot create / list / goto / delete,
// write to NAME:SNAPID, COW, the READONLY reload, clone, vmstate, discard
// (qemu_snapshot_test.go); reconnect with resend, sheep restart included
// (qemu_reconnect_test.go); collie and NBD reading what QEMU wrote and the
// other way round (qemu_frontends_test.go).
//
// Not covered, and why: a real QEMU binary (Debian's QEMU has no sheepdog
// driver, so the flows are replayed); NEW_VDI
// "rebase" (snapid 1 with a base that is not the working VDI, sent only
// after a failed DEL_VDI, which our sheep does not fail); shared locks
// (tgt, not QEMU). A successful FLUSH_VDI, with the object cache on, is in
// cache_test.go.

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// qemuSheep starts a one-node sheep formatted with copies=1 (plus extra
// format options) and returns it with a QEMU driver pointed at it.
func qemuSheep(t *testing.T, format ...string) (*Sheep, *qemuDriver) {
	t.Helper()
	var opts []string
	if strings.HasPrefix(t.Name(), "TestObjectCacheQemuFlows/") {
		opts = qemuCacheOptions
	}
	s := startSheep(t, opts...)
	s.must(t, nil, append([]string{"cluster", "format", "-c", "1"}, format...)...)
	return s, newQemuDriver(t, s)
}

// qemuCacheOptions are the sheep options qemuSheep adds for the flows
// TestObjectCacheQemuFlows runs as its subtests (the object cache on).
var qemuCacheOptions = []string{"-w", "size=128M"}

// mustCreate runs qemu-img create and fails the test unless NEW_VDI
// succeeded.
func (d *qemuDriver) mustCreate(name string, o qemuCreateOpts) uint32 {
	d.t.Helper()
	vid, res := d.create(name, o)
	if res != sdResSuccess {
		d.t.Fatalf("qemu-img create %s: NEW_VDI result %#x", name, res)
	}
	return vid
}

func (img *qemuImage) mustWrite(off uint64, data []byte) {
	img.t.Helper()
	if err := img.writeAt(off, data); err != nil {
		img.t.Fatalf("write %d bytes at %d to %s: %v", len(data), off, img.name, err)
	}
}

func (img *qemuImage) mustRead(off uint64, n int) []byte {
	img.t.Helper()
	b, err := img.readAt(off, n)
	if err != nil {
		img.t.Fatalf("read %d bytes at %d from %s: %v", n, off, img.name, err)
	}
	return b
}

func (img *qemuImage) mustClose() {
	img.t.Helper()
	if res := img.close(); res != sdResSuccess && res != sdResVdiNotLocked {
		img.t.Fatalf("close %s: RELEASE_VDI result %#x", img.name, res)
	}
}

func hasObjectFile(s *Sheep, oid uint64) bool {
	_, err := os.Stat(filepath.Join(s.Dir, "obj", sdOidHex(oid)))
	return err == nil
}

func sdOidHex(oid uint64) string {
	h := strconv.FormatUint(oid, 16)
	return strings.Repeat("0", 16-len(h)) + h
}

// collieReadAt reads n bytes at off of name (a snapshot with "-s", snap).
func collieReadAt(t *testing.T, s *Sheep, name string, off, n int, snap ...string) []byte {
	t.Helper()
	args := append([]string{"vdi", "read", name, strconv.Itoa(off), strconv.Itoa(n)}, snap...)
	return []byte(s.must(t, nil, args...))
}

// TestQemuCreate replays `qemu-img create sheepdog:Alice 256G`: the
// cluster defaults (proto_ver 1, no payload either way), NEW_VDI with
// copies 0 meaning "cluster default", the vid of the name hash; a second
// create of the name is VDI_EXIST. The preallocation variant writes every
// object, as QEMU's sd_prealloc would.
func TestQemuCreate(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)

	copies, policy, shift, res := d.clusterDefault()
	if res != sdResSuccess || copies != 1 || policy != 0 || shift != 22 {
		t.Fatalf("GET_CLUSTER_DEFAULT: result %#x copies %d policy %#x shift %d, want 0 1 0 22", res, copies, policy, shift)
	}
	const size = 256 << 30
	vid := d.mustCreate("Alice", qemuCreateOpts{size: size})
	if vid != 0x15d167 || vid != sdNameHash("Alice") {
		t.Fatalf("NEW_VDI Alice: vid %x, want the name hash 15d167", vid)
	}
	if _, res := d.create("Alice", qemuCreateOpts{size: size}); res != sdResVdiExist {
		t.Fatalf("second create of Alice: result %#x, want VDI_EXIST", res)
	}

	img := d.mustOpen("Alice")
	h := img.view()
	switch {
	case h.name() != "Alice" || h.tag() != "":
		t.Errorf("inode name %q tag %q", h.name(), h.tag())
	case h.vdiSize() != size || h.nrCopies() != 1 || h.copyPolicy() != 0 || h.shift() != 22:
		t.Errorf("inode size %d copies %d policy %d shift %d, want %d 1 0 22", h.vdiSize(), h.nrCopies(), h.copyPolicy(), h.shift(), size)
	case h.snapID() != 1 || h.vid() != vid || h.parent() != 0 || h.snapCtime() != 0:
		t.Errorf("inode snap_id %d vid %x parent %x snap_ctime %x", h.snapID(), h.vid(), h.parent(), h.snapCtime())
	case h.ctime()>>32 < uint64(time.Now().Add(-time.Hour).Unix()):
		t.Errorf("inode ctime %x is not now", h.ctime())
	}
	if slices.ContainsFunc(img.index, func(v uint32) bool { return v != 0 }) {
		t.Error("a new VDI has allocated objects")
	}
	img.mustClose()
	if list := s.must(t, nil, "vdi", "list", "-r"); !strings.HasPrefix(list, "= Alice 0 274877906944 0 0 ") {
		t.Errorf("vdi list -r: %q", list)
	}

	// Over the limit of the block size: QEMU refuses locally, the sheep
	// must refuse too.
	if _, res := d.newVdi(sdVdiHdr{vdiSize: 4<<40 + 512, shift: 22}, "Huge"); res != sdResInvalidParms {
		t.Errorf("NEW_VDI of 4 TiB + 512 at shift 22: result %#x, want INVALID_PARMS", res)
	}

	t.Run("preallocation=full", func(t *testing.T) {
		d := newQemuDriver(t, s)
		const size = 24 << 20
		vid := d.mustCreate("Prealloc", qemuCreateOpts{size: size})
		img := d.mustOpen("Prealloc")
		defer img.mustClose()
		obj := img.objSize()
		for off := uint64(0); off < size; off += obj {
			buf := img.mustRead(off, int(obj)) // a hole: served locally
			img.mustWrite(off, buf)
		}
		for idx := range uint32(size / obj) {
			if img.index[idx] != vid {
				t.Fatalf("data_vdi_id[%d] = %x after preallocation", idx, img.index[idx])
			}
			if !hasObjectFile(s, sdDataOid(vid, idx)) {
				t.Fatalf("object %d not stored", idx)
			}
		}
		// The index the server holds is what QEMU wrote.
		fresh := d.mustOpen("Prealloc")
		defer fresh.mustClose()
		if !slices.Equal(fresh.index[:size/obj], img.index[:size/obj]) {
			t.Fatal("stored data_vdi_id differs from the one QEMU wrote")
		}
		if row := s.must(t, nil, "vdi", "list", "-r", "Prealloc"); !strings.HasPrefix(row, "= Prealloc 0 25165824 25165824 0 ") {
			t.Fatalf("vdi list -r Prealloc: %q", row)
		}
		if got := collieReadAt(t, s, "Prealloc", 0, size); !bytes.Equal(got, make([]byte, size)) {
			t.Fatal("preallocated VDI does not read as zeros")
		}
	})
}

// TestQemuOpenLockClose replays open (LOCK_VDI + the 4,198,968-byte inode
// read with copies 0), GET_VDI_INFO, and close (RELEASE_VDI with name+NUL)
// without and with cluster locking.
func TestQemuOpenLockClose(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	if img, res := d.open("nosuch", 0, ""); img != nil || res != sdResNoVdi {
		t.Fatalf("open of a missing VDI: result %#x, want NO_VDI", res)
	}
	vid := d.mustCreate("t1", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("t1")
	if got, res := d.findVdi(sdOpGetVdiInfo, "t1", "", 0); res != sdResSuccess || got != vid {
		t.Fatalf("GET_VDI_INFO t1: vid %x result %#x", got, res)
	}
	// Opening twice without cluster locking is a name lookup.
	again := d.mustOpen("t1")
	again.mustClose()
	if res := img.close(); res != sdResSuccess {
		t.Fatalf("RELEASE_VDI: result %#x", res)
	}
	if got := s.must(t, nil, "vdi", "list", "-r", "t1"); !strings.HasPrefix(got, "= t1 0 67108864 ") {
		t.Fatalf("after close: %q", got)
	}

	// sheepdog+unix:///t1?socket=DIR/sock: the same flows on the sheep's
	// unix socket.
	t.Run("unix socket", func(t *testing.T) {
		d := newQemuUnixDriver(t, s)
		img := d.mustOpen("t1")
		img.mustWrite(4<<20, []byte("over the unix socket"))
		if got := img.mustRead(4<<20, 20); string(got) != "over the unix socket" {
			t.Fatalf("read back %q", got)
		}
		img.mustClose()
		if got := collieReadAt(t, s, "t1", 4<<20, 20); string(got) != "over the unix socket" {
			t.Fatalf("collie reads %q", got)
		}
	})

	t.Run("locking", func(t *testing.T) {
		sheeps := startCluster(t, 2)
		sheeps[0].must(t, nil, "cluster", "format", "-c", "2", "-l")
		d0, d1 := newQemuDriver(t, sheeps[0]), newQemuDriver(t, sheeps[1])
		d0.mustCreate("locked", qemuCreateOpts{size: 16 << 20})
		img := d0.mustOpen("locked")
		img.mustWrite(0, []byte("held"))
		// The lock belongs to the sheep QEMU talks to: another node's
		// client is refused (QEMU: "VDI is already locked", EBUSY).
		if other, res := d1.open("locked", 0, ""); other != nil || res != sdResVdiLocked {
			t.Fatalf("LOCK_VDI through the other node: result %#x, want VDI_LOCKED", res)
		}
		if res := img.close(); res != sdResSuccess {
			t.Fatalf("RELEASE_VDI: result %#x", res)
		}
		// A second release is harmless: SUCCESS (sheep 1.0) or
		// VDI_NOT_LOCKED, which QEMU ignores.
		payload := []byte("locked\x00")
		rsp, _ := d0.side(sdVdiHdr{opcode: sdOpReleaseVdi, flags: sdFlagWrite, dlen: uint32(len(payload)), baseVid: img.vid()}.bytes(), payload, 0)
		if rsp.result() != sdResSuccess && rsp.result() != sdResVdiNotLocked {
			t.Fatalf("second RELEASE_VDI: result %#x, want SUCCESS or VDI_NOT_LOCKED", rsp.result())
		}
		other := d1.mustOpen("locked")
		if got := other.mustRead(0, 4); string(got) != "held" {
			t.Fatalf("read through the other node: %q", got)
		}
		other.mustClose()
	})
}

// TestQemuPipelinedIO keeps 64 requests in flight on the one I/O
// connection: 64 creates then one batched index update, then rounds of
// 64 mixed writes and reads whose replies come back in completion order,
// matched by id. Any reply but READ_OBJ's carrying data fails the test
// (the reader checks it).
func TestQemuPipelinedIO(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	// 1 MiB objects: one 64 MiB guest write is 64 creates in flight.
	vid := d.mustCreate("Alice", qemuCreateOpts{size: 256 << 20, objectSize: 20})
	img := d.mustOpen("Alice")
	defer img.mustClose()
	const obj, n = 1 << 20, 64
	data := randomBytes(n * obj)

	reqs := make([]*aioReq, n)
	for i := range reqs {
		reqs[i] = img.dataWrite(uint32(i), 0, data[i*obj:(i+1)*obj])
		if !reqs[i].create || reqs[i].hdr.flags != sdFlagWrite|sdFlagCache || reqs[i].hdr.copies != 1 {
			t.Fatalf("qemuPiece %d: not a plain CREATE (flags %#x)", i, reqs[i].hdr.flags)
		}
	}
	first := img.io.peekNextID()
	img.io.submit(reqs...)
	for i, r := range reqs {
		if r.hdr.id != first+uint32(i) {
			t.Fatalf("qemuPiece %d has id %d", i, r.hdr.id)
		}
		if err := img.wait(r); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		img.index[i] = vid
	}
	// One index update for the whole range, as QEMU batches it.
	if err := img.updateIndex(0, n-1); err != nil {
		t.Fatal(err)
	}

	// Rounds of one large write followed by 63 small reads: replies in
	// completion order means the small ones overtake the large one.
	outOfOrder := false
	for round := 0; round < 10 && !outOfOrder; round++ {
		patch := randomBytes(obj / 2)
		copy(data[obj/4:], patch)
		w := img.dataWrite(0, obj/4, patch)
		if w.create || w.hdr.opcode != sdOpWriteObj {
			t.Fatal("a write to an own object is not WRITE_OBJ")
		}
		batch := []*aioReq{w}
		for i := 1; i < n; i++ {
			batch = append(batch, &aioReq{hdr: sdObjHdr{opcode: sdOpReadObj, flags: sdFlagCache, dlen: 4096,
				oid: sdDataOid(vid, uint32(i)), copies: 1, offset: uint64(i * 4096)}})
		}
		before := len(img.io.replyOrder())
		img.io.submit(batch...)
		for i, r := range batch {
			if err := img.wait(r); err != nil {
				t.Fatalf("round %d request %d: %v", round, i, err)
			}
			if i > 0 && !bytes.Equal(r.data, data[i*obj+i*4096:i*obj+i*4096+4096]) {
				t.Fatalf("round %d: read of object %d returned other bytes", round, i)
			}
		}
		got := img.io.replyOrder()[before:]
		if len(got) != n {
			t.Fatalf("round %d: %d replies for %d requests", round, len(got), n)
		}
		outOfOrder = !slices.IsSorted(got)
	}
	if !outOfOrder {
		t.Error("10 rounds of 64 pipelined requests all completed in submission order: the sheep does not run them concurrently")
	}

	// An error reply to a READ_OBJ carries no payload (QEMU reads
	// data_length bytes before it looks at the result) and the stream
	// stays in sync for the requests around it.
	missing := &aioReq{hdr: sdObjHdr{opcode: sdOpReadObj, flags: sdFlagCache, dlen: 4096, oid: sdDataOid(vid, 200), copies: 1}}
	around := img.dataWrite(1, 0, data[obj:obj+512])
	img.io.submit(missing, around)
	if err := img.wait(missing); !errors.Is(err, sdResultError(0x02)) {
		t.Fatalf("READ_OBJ of a missing object: %v, want NO_OBJ", err)
	}
	if err := img.wait(around); err != nil {
		t.Fatalf("write after the failed read: %v", err)
	}

	// 64 reads in flight at once (one guest read spanning 64 objects).
	if got := img.mustRead(0, n*obj); !bytes.Equal(got, data) {
		t.Fatal("pipelined read differs from what was written")
	}
	if got := collieReadAt(t, s, "Alice", 0, n*obj); !bytes.Equal(got, data) {
		t.Fatal("collie reads other bytes than QEMU wrote")
	}
}

// TestQemuFlush: FLUSH_VDI in CACHE mode is answered INVALID_PARMS with no
// payload (Sheepdog 1.0, docs/design.md §7 "Durability": no write-back cache, every
// acknowledged write is already stable); QEMU then sends DIRECT, which must
// work, and never flushes again.
func TestQemuFlush(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	d.mustCreate("t1", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("t1")
	img.mustWrite(0, bytes.Repeat([]byte{0xab}, 1<<20))
	res, err := img.flush()
	if err != nil || res != sdResInvalidParms {
		t.Fatalf("FLUSH_VDI: result %#x err %v, want INVALID_PARMS", res, err)
	}
	if img.cacheFlag() != sdFlagDirect {
		t.Fatal("the image did not switch to DIRECT")
	}
	w := img.dataWrite(1, 0, nil)
	if w.hdr.flags != sdFlagWrite|sdFlagDirect {
		t.Fatalf("write after the refused flush has flags %#x", w.hdr.flags)
	}
	img.mustWrite(4<<20, bytes.Repeat([]byte{0xcd}, 8192))
	img.mustWrite(3<<20, bytes.Repeat([]byte{0xef}, 4096))
	if got := img.mustRead(3<<20, 4096); !bytes.Equal(got, bytes.Repeat([]byte{0xef}, 4096)) {
		t.Fatal("DIRECT read-back differs")
	}
	img.mustClose()
	want := append(bytes.Repeat([]byte{0xab}, 1<<20), make([]byte, 2<<20)...)
	want = append(append(want, bytes.Repeat([]byte{0xef}, 4096)...), make([]byte, 1<<20-4096)...)
	want = append(want, bytes.Repeat([]byte{0xcd}, 8192)...)
	if got := collieReadAt(t, s, "t1", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("collie reads other bytes")
	}
}

// TestQemuRedundancy: redundancy=3 is copies 3, policy 0, and every object
// has three copies; redundancy=2:1 (copies 3, policy 0x11) is erasure
// coding: every object is three strip files, and collie reads what QEMU
// wrote; 4:2 (copies 6, policy 0x22) is created, and its writes fail with
// three zones (fewer than four data strips).
func TestQemuRedundancy(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "-c", "2")
	d := newQemuDriver(t, sheeps[1])
	if copies, policy, _, _ := d.clusterDefault(); copies != 2 || policy != 0 {
		t.Fatalf("GET_CLUSTER_DEFAULT copies %d policy %d, want 2 0", copies, policy)
	}

	vid := d.mustCreate("r3", qemuCreateOpts{size: 64 << 20, copies: 3})
	img := d.mustOpen("r3")
	if h := img.view(); h.nrCopies() != 3 || h.copyPolicy() != 0 {
		t.Fatalf("redundancy=3 inode: copies %d policy %d", h.nrCopies(), h.copyPolicy())
	}
	data := randomBytes(5 << 20)
	img.mustWrite(2<<20, data)
	if w := img.dataWrite(0, 0, nil); w.hdr.copies != 3 {
		t.Fatalf("I/O carries copies %d, want the inode's 3", w.hdr.copies)
	}
	img.mustClose()
	prefix := sdOidHex(sdDataOid(vid, 0))[:8]
	copies := objectCopies(t, sheeps, prefix)
	if len(copies) != 2 {
		t.Fatalf("objects of r3: %v", copies)
	}
	for oid, n := range copies {
		if n != 3 {
			t.Errorf("%s has %d copies, want 3", oid, n)
		}
	}
	if got := collieReadAt(t, sheeps[2], "r3", 2<<20, len(data)); !bytes.Equal(got, data) {
		t.Fatal("collie reads other bytes")
	}

	// The default (copies 0) follows the cluster: 2.
	d.mustCreate("r0", qemuCreateOpts{size: 8 << 20})
	if img := d.mustOpen("r0"); img.view().nrCopies() != 2 {
		t.Fatalf("copies 0 gave an inode with %d copies", img.view().nrCopies())
	} else {
		img.mustClose()
	}

	// Erasure coding: 2:1 fits three zones; its objects are strips.
	// 4:2 is created (copies 6) but a write needs four zones.
	ecVid := d.mustCreate("ec21", qemuCreateOpts{size: 16 << 20, copies: 3, policy: 0x11})
	ec := d.mustOpen("ec21")
	if h := ec.view(); h.nrCopies() != 3 || h.copyPolicy() != 0x11 {
		t.Fatalf("redundancy=2:1 inode: copies %d policy %#x", h.nrCopies(), h.copyPolicy())
	}
	ecData := randomBytes(5 << 20)
	ec.mustWrite(1<<20+512, ecData)
	ec.mustClose()
	ecPrefix := sdOidHex(sdDataOid(ecVid, 0))[:8]
	strips := objectCopies(t, sheeps, ecPrefix)
	if len(strips) != 2*3 {
		t.Fatalf("strips of ec21: %v", strips)
	}
	for name, n := range strips {
		if n != 1 || !strings.Contains(name, "_") {
			t.Errorf("%s: %d files, want one strip file", name, n)
		}
	}
	if got := collieReadAt(t, sheeps[0], "ec21", 1<<20+512, len(ecData)); !bytes.Equal(got, ecData) {
		t.Fatal("collie reads other bytes of the 2:1 VDI")
	}
	d.mustCreate("ec42", qemuCreateOpts{size: 16 << 20, copies: 6, policy: 0x22})
	ec42 := d.mustOpen("ec42")
	if err := ec42.writeAt(0, randomBytes(4096)); err == nil {
		t.Fatal("a 4:2 write with three zones succeeded")
	}
	ec42.mustClose()
}

// TestQemuBlockSizeShift: object_size=1M sends NEW_VDI with shift 20 and
// no GET_CLUSTER_DEFAULT; a 1 MiB write at 512 KiB is two creates and one
// 8-byte index update at 4664. A cluster formatted with -z 23 hands shift
// 23 to a create without object_size. Shifts outside 20..31 are refused.
func TestQemuBlockSizeShift(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t, "-z", "23")
	if _, _, shift, _ := d.clusterDefault(); shift != 23 {
		t.Fatalf("GET_CLUSTER_DEFAULT shift %d, want 23", shift)
	}
	d.mustCreate("big", qemuCreateOpts{size: 64 << 20})
	big := d.mustOpen("big")
	if big.view().shift() != 23 || big.objSize() != 8<<20 {
		t.Fatalf("default create: shift %d", big.view().shift())
	}
	bdata := randomBytes(9 << 20)
	big.mustWrite(4<<20, bdata)
	big.mustClose()
	if got := collieReadAt(t, s, "big", 4<<20, len(bdata)); !bytes.Equal(got, bdata) {
		t.Fatal("shift 23: collie reads other bytes")
	}

	vid := d.mustCreate("small", qemuCreateOpts{size: 16 << 20, objectSize: 20})
	img := d.mustOpen("small")
	if img.view().shift() != 20 {
		t.Fatalf("object_size=1M: shift %d", img.view().shift())
	}
	data := randomBytes(1 << 20)
	img.mustWrite(512<<10, data)
	if img.index[0] != vid || img.index[1] != vid || img.index[2] != 0 {
		t.Fatalf("index after the write: %x", img.index[:3])
	}
	stored := d.readInode(vid, 0, sdFlagCache)
	if sdLE32(stored[4664:]) != vid || sdLE32(stored[4668:]) != vid || sdLE32(stored[4672:]) != 0 {
		t.Fatalf("stored index: % x", stored[4664:4676])
	}
	img.mustClose()
	want := append(append(make([]byte, 512<<10), data...), make([]byte, 512<<10)...)
	if got := collieReadAt(t, s, "small", 0, 2<<20); !bytes.Equal(got, want) {
		t.Fatal("shift 20: collie reads other bytes")
	}
	if !hasObjectFile(s, sdDataOid(vid, 1)) || hasObjectFile(s, sdDataOid(vid, 2)) {
		t.Fatal("objects of the 1 MiB VDI are not where the index says")
	}
	if fi, err := os.Stat(filepath.Join(s.Dir, "obj", sdOidHex(sdDataOid(vid, 0)))); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("a shift-20 object is not 1 MiB: %v", err)
	}

	for _, shift := range []uint8{19, 32} {
		if _, res := d.newVdi(sdVdiHdr{vdiSize: 1 << 30, shift: shift}, "bad"+strconv.Itoa(int(shift))); res != sdResInvalidParms {
			t.Errorf("shift %d: result %#x, want INVALID_PARMS", shift, res)
		}
	}
	if _, res := d.newVdi(sdVdiHdr{vdiSize: 1<<40 + 512, shift: 20}, "toolarge"); res != sdResInvalidParms {
		t.Errorf("1 TiB + 512 at shift 20: result %#x, want INVALID_PARMS", res)
	}
}

// TestQemuResize replays `qemu-img resize sheepdog:t1 +N` (§8.10): the
// whole 4664-byte header rewritten with the new vdi_size on a side
// connection. collie, NBD and a fresh open see the new size, and writes
// beyond the old end work.
func TestQemuResize(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	d.mustCreate("t1", qemuCreateOpts{size: 16 << 20})
	img := d.mustOpen("t1")
	img.mustWrite(0, []byte("head"))
	img.mu.Lock()
	sdPut64(img.hdr[536:], 96<<20)
	hdr := slices.Clone(img.hdr)
	img.mu.Unlock()
	rsp, _ := d.side(sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | sdFlagCache, dlen: sdInodeHeaderSize,
		oid: sdVdiOid(img.vid()), copies: 1}.bytes(), hdr, 0)
	if rsp.result() != sdResSuccess {
		t.Fatalf("header write: result %#x", rsp.result())
	}
	img.mustWrite(80<<20, []byte("beyond the old end"))
	img.mustClose()
	if got := d.mustOpen("t1"); got.view().vdiSize() != 96<<20 || string(got.mustRead(0, 4)) != "head" {
		t.Fatalf("after resize: size %d", got.view().vdiSize())
	} else {
		got.mustClose()
	}
	if row := s.must(t, nil, "vdi", "list", "-r", "t1"); !strings.HasPrefix(row, "= t1 0 100663296 ") {
		t.Fatalf("vdi list -r t1: %q", row)
	}
	if got := collieReadAt(t, s, "t1", 80<<20, 18); string(got) != "beyond the old end" {
		t.Fatalf("collie reads %q", got)
	}
}
