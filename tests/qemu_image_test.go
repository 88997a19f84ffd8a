package tests

// qemuImage replays what QEMU does with one open image: I/O, snapshots,
// vmstate, discard (docs/qemu-client.md §8, §9).

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// qemuImage is one open image: QEMU's BDRVSheepdogState.
type qemuImage struct {
	d    *qemuDriver
	t    testing.TB
	name string

	mu         sync.Mutex
	hdr        []byte   // the 4664-byte inode header as QEMU holds it
	index      []uint32 // data_vdi_id
	cache      uint16   // sdFlagCache, or sdFlagDirect once FLUSH was refused
	isSnapshot bool     // opened by snapshot id or tag: the first write branches
	io         *qemuIOConn
}

func (img *qemuImage) view() sdInode {
	img.mu.Lock()
	defer img.mu.Unlock()
	return sdInode(img.hdr)
}
func (img *qemuImage) vid() uint32     { return img.view().vid() }
func (img *qemuImage) objSize() uint64 { return uint64(1) << img.view().shift() }
func (img *qemuImage) cacheFlag() uint16 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.cache
}

// open is QEMU's sd_open (§8.1): the I/O connection first, LOCK_VDI, then
// the whole 4,198,968-byte inode on a side connection with copies 0.
func (d *qemuDriver) open(name string, snapID uint32, tag string) (*qemuImage, uint32) {
	d.t.Helper()
	img := &qemuImage{d: d, t: d.t, name: name, cache: sdFlagCache}
	img.io = dialIO(d.t, d.network, d.addr, img)
	vid, res := d.findVdi(sdOpLockVdi, name, tag, snapID)
	if res != sdResSuccess {
		img.io.close()
		return nil, res
	}
	ino := d.readInode(vid, 0, sdFlagCache)
	img.hdr, img.index = ino[:sdInodeHeaderSize], sdDecodeIndex(ino[sdInodeHeaderSize:])
	img.isSnapshot = snapID != 0 || tag != ""
	if got := img.vid(); got != vid {
		d.t.Fatalf("open %s: LOCK_VDI answered vid %x, its inode says %x", name, vid, got)
	}
	return img, sdResSuccess
}

// mustOpen opens the working VDI name or fails the test.
func (d *qemuDriver) mustOpen(name string) *qemuImage {
	d.t.Helper()
	img, res := d.open(name, 0, "")
	if res != sdResSuccess {
		d.t.Fatalf("open %s: result %#x", name, res)
	}
	return img
}

// close is QEMU's sd_close (§8.2): RELEASE_VDI of the current vid with the
// name and its NUL only, then the I/O connection goes.
func (img *qemuImage) close() uint32 {
	img.t.Helper()
	payload := append([]byte(img.name), 0)
	rsp, _ := img.d.side(sdVdiHdr{opcode: sdOpReleaseVdi, flags: sdFlagWrite, dlen: uint32(len(payload)), baseVid: img.vid()}.bytes(), payload, 0)
	img.io.close()
	return rsp.result()
}

// qemuPiece is the part of one request inside one object.
type qemuPiece struct {
	idx    uint32
	objOff uint64
	lo, hi uint64 // range in the request buffer
}

func (img *qemuImage) pieces(off, n uint64) []qemuPiece {
	size := img.objSize()
	var ps []qemuPiece
	for pos := off; pos < off+n; {
		idx := pos / size
		end := min(off+n, (idx+1)*size)
		ps = append(ps, qemuPiece{idx: uint32(idx), objOff: pos % size, lo: pos - off, hi: end - off})
		pos = end
	}
	return ps
}

// dataWrite builds the request QEMU sends for a write into object idx
// (§8.6): CREATE for a hole, WRITE_OBJ for an own object, COW CREATE from
// whoever owns it otherwise.
func (img *qemuImage) dataWrite(idx uint32, objOff uint64, data []byte) *aioReq {
	img.mu.Lock()
	defer img.mu.Unlock()
	vid := sdInode(img.hdr).vid()
	h := sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | img.cache, dlen: uint32(len(data)), oid: sdDataOid(vid, idx),
		copies: sdInode(img.hdr).nrCopies(), offset: objOff}
	r := &aioReq{hdr: h, payload: data, udata: true}
	r.reexamine(img)
	return r
}

// reexamine is QEMU's resend_aioreq check: a data write becomes WRITE_OBJ
// if the index already names the image's own vid, else a CREATE (COW from
// the current owner). Called with img.mu held.
func (r *aioReq) reexamine(img *qemuImage) {
	if !r.udata || !sdIsDataOid(r.hdr.oid) {
		return
	}
	idx := uint32(r.hdr.oid)
	own := sdInode(img.hdr).vid()
	r.hdr.flags &^= sdFlagCow | sdFlagCache | sdFlagDirect
	r.hdr.flags |= img.cache
	r.hdr.cowOid, r.create = 0, false
	r.hdr.opcode = sdOpWriteObj
	if img.index[idx] == own {
		return
	}
	r.create = true
	r.hdr.opcode = sdOpCreateAndWrite
	if owner := img.index[idx]; owner != 0 {
		r.hdr.cowOid = sdDataOid(owner, idx)
		r.hdr.flags |= sdFlagCow
	}
}

// writeAt is QEMU's write path: every piece sent back-to-back on the I/O
// connection, then, once all replied, one index update covering the
// objects created. A READONLY reply reloads the inode and resends.
func (img *qemuImage) writeAt(off uint64, data []byte) error {
	if img.isSnapshot {
		if err := img.branch(); err != nil {
			return err
		}
	}
	var reqs []*aioReq
	for _, p := range img.pieces(off, uint64(len(data))) {
		reqs = append(reqs, img.dataWrite(p.idx, p.objOff, data[p.lo:p.hi]))
	}
	img.io.submit(reqs...)
	minIdx, maxIdx := uint32(sdNrIndexes), uint32(0)
	var firstErr error
	for _, r := range reqs {
		if err := img.wait(r); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if r.create {
			idx := uint32(r.hdr.oid)
			img.mu.Lock()
			img.index[idx] = sdInode(img.hdr).vid()
			img.mu.Unlock()
			minIdx, maxIdx = min(minIdx, idx), max(maxIdx, idx)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if minIdx <= maxIdx {
		return img.updateIndex(minIdx, maxIdx)
	}
	return nil
}

// updateIndex sends the in-memory data_vdi_id[lo..hi] to the inode on the
// I/O connection (§8.6 index update, §8.8 discard).
func (img *qemuImage) updateIndex(lo, hi uint32) error {
	img.mu.Lock()
	v := sdInode(img.hdr)
	payload := sdEncodeIndex(img.index[lo : hi+1])
	h := sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | img.cache, dlen: uint32(len(payload)), oid: sdVdiOid(v.vid()),
		copies: v.nrCopies(), offset: sdIndexOff(lo)}
	img.mu.Unlock()
	r := &aioReq{hdr: h, payload: payload}
	img.io.submit(r)
	return img.wait(r)
}

// wait waits for r's reply; READONLY makes QEMU reload the inode by name
// (GET_VDI_INFO, snapid 0) and resend r, with its id, to the new working
// VDI (§9).
func (img *qemuImage) wait(r *aioReq) error {
	for {
		rep, err := r.reply()
		if err != nil {
			return err
		}
		if rep.err != nil {
			return rep.err
		}
		switch rep.rsp.result() {
		case sdResSuccess:
			r.data = rep.data
			return nil
		case sdResReadonly:
			img.reload(sdOidVid(r.hdr.oid))
			img.mu.Lock()
			vid := sdInode(img.hdr).vid()
			if sdIsDataOid(r.hdr.oid) {
				r.hdr.oid = sdDataOid(vid, uint32(r.hdr.oid))
			} else if r.hdr.oid&sdVdiBit != 0 {
				r.hdr.oid = sdVdiOid(vid)
			}
			r.reexamine(img)
			img.mu.Unlock()
			img.io.resend(r)
		default:
			return fmt.Errorf("%s: %w", r, sdResultError(rep.rsp.result()))
		}
	}
}

// sdResultError is a non-zero result code as an error.
type sdResultError uint32

func (e sdResultError) Error() string { return fmt.Sprintf("result %#x", uint32(e)) }

// reload is QEMU's reload_inode(s, 0, ""): only when the failed request
// named the image's own vid.
func (img *qemuImage) reload(failedVid uint32) {
	img.t.Helper()
	if failedVid != img.vid() {
		return
	}
	vid, res := img.d.findVdi(sdOpGetVdiInfo, img.name, "", 0)
	if res != sdResSuccess {
		img.t.Errorf("reload %s: GET_VDI_INFO result %#x", img.name, res)
		return
	}
	sc := img.d.dialSide()
	defer sc.close()
	h := sdReadHeader(sc, vid, img.view().nrCopies(), img.cacheFlag())
	if h == nil {
		img.t.Errorf("reload %s: header of %x unreadable", img.name, vid)
		return
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if vid != sdInode(img.hdr).vid() {
		copy(img.hdr, h) // the index is kept: its entries still name the old vid
	}
}

// readAt is QEMU's read path: holes are zero-filled locally, everything
// else is a READ_OBJ of the owner's object, all in flight together.
func (img *qemuImage) readAt(off uint64, n int) ([]byte, error) {
	buf := make([]byte, n)
	type part struct {
		r      *aioReq
		lo, hi uint64
	}
	var parts []part
	pieces := img.pieces(off, uint64(n))
	img.mu.Lock()
	v := sdInode(img.hdr)
	for _, p := range pieces {
		owner := img.index[p.idx]
		if owner == 0 {
			continue
		}
		h := sdObjHdr{opcode: sdOpReadObj, flags: img.cache, dlen: uint32(p.hi - p.lo), oid: sdDataOid(owner, p.idx),
			copies: v.nrCopies(), offset: p.objOff}
		parts = append(parts, part{r: &aioReq{hdr: h}, lo: p.lo, hi: p.hi})
	}
	img.mu.Unlock()
	for _, p := range parts {
		img.io.submit(p.r)
	}
	for _, p := range parts {
		if err := img.wait(p.r); err != nil {
			return nil, err
		}
		copy(buf[p.lo:p.hi], p.r.data)
	}
	return buf, nil
}

// flush is FLUSH_VDI in CACHE mode; INVALID_PARMS switches the image to
// DIRECT and counts as success (§8.7).
func (img *qemuImage) flush() (uint32, error) {
	if img.cacheFlag() != sdFlagCache {
		return sdResSuccess, nil
	}
	v := img.view()
	r := &aioReq{hdr: sdObjHdr{opcode: sdOpFlushVdi, flags: sdFlagCache, oid: sdVdiOid(v.vid()), copies: v.nrCopies()}}
	img.io.submit(r)
	rep, err := r.reply()
	if err != nil {
		return 0, err
	}
	if rep.err != nil {
		return 0, rep.err
	}
	if rep.rsp.result() == sdResInvalidParms {
		img.mu.Lock()
		img.cache = sdFlagDirect
		img.mu.Unlock()
	}
	return rep.rsp.result(), nil
}

// discard is QEMU's sd_co_pdiscard (§8.8): for each fully covered,
// allocated object, 0 into data_vdi_id[idx] with a 4-byte index write.
func (img *qemuImage) discard(off, n uint64) error {
	size := img.objSize()
	for idx := (off + size - 1) / size; (idx+1)*size <= off+n; idx++ {
		img.mu.Lock()
		allocated := img.index[idx] != 0
		img.index[idx] = 0
		img.mu.Unlock()
		if !allocated {
			continue
		}
		if err := img.updateIndex(uint32(idx), uint32(idx)); err != nil {
			return err
		}
	}
	return nil
}

// snapshotCreate is sd_snapshot_create (§8.11): the whole header rewritten
// with the tag on connection A, NEW_VDI snapid 1 on connection B, then the
// new working VDI's header read on A; the in-memory index is kept.
func (img *qemuImage) snapshotCreate(tag string, vmStateSize, vmClock uint64) (uint32, uint32) {
	img.t.Helper()
	if img.isSnapshot {
		img.t.Fatal("QEMU refuses to snapshot an image opened as a snapshot")
	}
	img.mu.Lock()
	copy(img.hdr[256:512], sdPadded(tag, 256))
	sdPut64(img.hdr[544:], vmStateSize)
	sdPut64(img.hdr[528:], vmClock)
	hdr := slices.Clone(img.hdr)
	img.mu.Unlock()
	v := sdInode(hdr)
	a := img.d.dialSide()
	defer a.close()
	rsp, _ := a.do(sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | img.cacheFlag(), dlen: sdInodeHeaderSize, oid: sdVdiOid(v.vid()), copies: v.nrCopies()}.bytes(), hdr, 0)
	if rsp.result() != sdResSuccess {
		return 0, rsp.result()
	}
	newVid, res := img.d.newVdi(sdVdiHdr{vdiSize: v.vdiSize(), baseVid: v.vid(), copies: v.nrCopies(), policy: uint8(v.copyPolicy()),
		shift: v.shift(), snapID: 1}, img.name)
	if res != sdResSuccess {
		return 0, res
	}
	h := sdReadHeader(a, newVid, v.nrCopies(), img.cacheFlag())
	if h == nil {
		img.t.Fatalf("snapshot %s: header of the new working VDI %x unreadable", img.name, newVid)
	}
	img.mu.Lock()
	copy(img.hdr, h)
	img.mu.Unlock()
	return newVid, sdResSuccess
}

// branch is what QEMU does before the first write to an image opened as a
// snapshot (§8.14), and the core of "goto" (§8.13): DEL_VDI of the working
// VDI (name only), NEW_VDI from the snapshot (snapid 1 if the delete
// failed), then the new inode in full.
func (img *qemuImage) branch() error {
	v := img.view()
	rsp, _ := img.d.side(sdVdiHdr{opcode: sdOpDelVdi, flags: sdFlagWrite, dlen: sdMaxVdiLen, baseVid: v.vid()}.bytes(), sdPadded(img.name, sdMaxVdiLen), 0)
	deleted := rsp.result() == sdResSuccess || rsp.result() == sdResNoVdi
	var snap uint32
	if !deleted {
		snap = 1
	}
	vid, res := img.d.newVdi(sdVdiHdr{vdiSize: v.vdiSize(), baseVid: v.vid(), copies: v.nrCopies(), policy: uint8(v.copyPolicy()),
		shift: v.shift(), snapID: snap}, img.name)
	if res != sdResSuccess {
		return fmt.Errorf("branch %s from %x: DEL_VDI %#x, NEW_VDI %w", img.name, v.vid(), rsp.result(), sdResultError(res))
	}
	ino := img.d.readInode(vid, v.nrCopies(), img.cacheFlag())
	img.mu.Lock()
	img.hdr, img.index = ino[:sdInodeHeaderSize], sdDecodeIndex(ino[sdInodeHeaderSize:])
	img.isSnapshot = false
	img.mu.Unlock()
	return nil
}

// gotoSnapshot is sd_snapshot_goto (§8.13): find the snapshot by id or
// tag, take its header, then branch.
func (img *qemuImage) gotoSnapshot(snapID uint32, tag string) error {
	img.t.Helper()
	vid, res := img.d.findVdi(sdOpGetVdiInfo, img.name, tag, snapID)
	if res != sdResSuccess {
		return fmt.Errorf("goto %s: GET_VDI_INFO %w", img.name, sdResultError(res))
	}
	sc := img.d.dialSide()
	h := sdReadHeader(sc, vid, img.view().nrCopies(), img.cacheFlag())
	sc.close()
	if h == nil {
		return fmt.Errorf("goto %s: header of %x unreadable", img.name, vid)
	}
	old := slices.Clone(img.hdr)
	img.mu.Lock()
	if vid != sdInode(img.hdr).vid() {
		copy(img.hdr, h)
	}
	img.mu.Unlock()
	if err := img.branch(); err != nil {
		img.mu.Lock()
		img.hdr = old
		img.mu.Unlock()
		return err
	}
	return nil
}

// snapshotDelete is sd_snapshot_delete (§8.15) with its QEMU bug: the
// open image's index is wiped first (runs of up to 128 entries), then
// LOCK_VDI of the snapshot (never released) and DEL_VDI name+tag, snapid.
func (img *qemuImage) snapshotDelete(snapID uint32) uint32 {
	img.t.Helper()
	sc := img.d.dialSide()
	for start := 0; start < sdNrIndexes; {
		img.mu.Lock()
		for start < sdNrIndexes && img.index[start] == 0 {
			start++
		}
		if start == sdNrIndexes {
			img.mu.Unlock()
			break
		}
		end := start
		for end < sdNrIndexes && end < start+128 && img.index[end] != 0 {
			img.index[end] = 0
			end++
		}
		v := sdInode(img.hdr)
		img.mu.Unlock()
		rsp, _ := sc.do(sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | img.cacheFlag(), dlen: uint32(4 * (end - start)),
			oid: sdVdiOid(v.vid()), copies: v.nrCopies(), offset: sdIndexOff(uint32(start))}.bytes(), make([]byte, 4*(end-start)), 0)
		if rsp.result() != sdResSuccess {
			img.t.Fatalf("snapshot delete: index wipe result %#x", rsp.result())
		}
		start = end
	}
	sc.close()
	if _, res := img.d.findVdi(sdOpLockVdi, img.name, "", snapID); res != sdResSuccess {
		return res
	}
	rsp, _ := img.d.side(sdVdiHdr{opcode: sdOpDelVdi, flags: sdFlagWrite, dlen: 512, snapID: snapID}.bytes(), sdNameTag(img.name, ""), 0)
	return rsp.result()
}

// saveVMState is sd_save_vmstate (§8.16): vmstate objects of the current
// vid on a side connection, CREATE when a chunk starts an object.
func (img *qemuImage) saveVMState(pos uint64, data []byte) {
	img.t.Helper()
	v := img.view()
	sc := img.d.dialSide()
	defer sc.close()
	for _, p := range img.pieces(pos, uint64(len(data))) {
		op := uint8(sdOpWriteObj)
		if p.objOff == 0 {
			op = sdOpCreateAndWrite
		}
		rsp, _ := sc.do(sdObjHdr{opcode: op, flags: sdFlagWrite | img.cacheFlag(), dlen: uint32(p.hi - p.lo), oid: sdVmstateOid(v.vid(), p.idx),
			copies: v.nrCopies(), offset: p.objOff}.bytes(), data[p.lo:p.hi], 0)
		if rsp.result() != sdResSuccess {
			img.t.Fatalf("save vmstate object %d at %d: result %#x", p.idx, p.objOff, rsp.result())
		}
	}
}

// loadVMState is sd_load_vmstate: READ_OBJ of parent_vdi_id's vmstate
// objects (after a snapshot the state belongs to the parent).
func (img *qemuImage) loadVMState(pos uint64, n int) []byte {
	img.t.Helper()
	v := img.view()
	sc := img.d.dialSide()
	defer sc.close()
	out := make([]byte, n)
	for _, p := range img.pieces(pos, uint64(n)) {
		rsp, data := sc.do(sdObjHdr{opcode: sdOpReadObj, flags: img.cacheFlag(), dlen: uint32(p.hi - p.lo), oid: sdVmstateOid(v.parent(), p.idx),
			copies: v.nrCopies(), offset: p.objOff}.bytes(), nil, int(p.hi-p.lo))
		if rsp.result() != sdResSuccess || len(data) != int(p.hi-p.lo) {
			img.t.Fatalf("load vmstate object %d of %x: result %#x, %d bytes", p.idx, v.parent(), rsp.result(), len(data))
		}
		copy(out[p.lo:], data)
	}
	return out
}
