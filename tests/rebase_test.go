package tests

// QEMU's "goto snapshot" when DEL_VDI of the working VDI fails: NEW_VDI
// with snapid 1 and the snapshot as base, which Sheepdog calls a rebase
// (docs/qemu-client.md §8.13, §8.14; docs/protocol.md §4.4).

import (
	"bytes"
	"io"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// delVdiProxy forwards connections to a sheep. While armed, it answers the
// next DEL_VDI itself with EIO, as a sheep that failed to delete would:
// QEMU's sd_delete reports the working VDI as not deleted, and the branch
// continues with a rebase.
type delVdiProxy struct {
	addr   string
	armed  atomic.Bool
	failed atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
}

func startDelVdiProxy(t *testing.T, s *Sheep) *delVdiProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delVdiProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c, s.Addr())
			}()
		}
	}()
	return p
}

func (p *delVdiProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *delVdiProxy) serve(c net.Conn, sheep string) {
	defer c.Close()
	hdr := make([]byte, 48)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	if hdr[1] == sdOpDelVdi && p.armed.CompareAndSwap(true, false) {
		if _, err := io.CopyN(io.Discard, c, int64(sdLE32(hdr[12:]))); err != nil {
			return
		}
		var rsp sdRsp
		rsp[0], rsp[1] = hdr[0], hdr[1]
		copy(rsp[8:12], hdr[8:12]) // id
		sdPut32(rsp[16:], uint32(proto.ResEIO))
		c.Write(rsp[:])
		p.failed.Add(1)
		return
	}
	up, err := net.Dial("tcp", sheep)
	if err != nil {
		return
	}
	p.track(up)
	defer up.Close()
	if _, err := up.Write(hdr); err != nil {
		return
	}
	go func() {
		io.Copy(c, up)
		c.Close()
	}()
	io.Copy(up, c)
}

// TestRebaseGoto replays QEMU's goto of snapshot "a" whose DEL_VDI of the
// working VDI fails. The NEW_VDI that follows (snapid 1, base = the
// snapshot) must leave the family Sheepdog's rebase leaves: the old working
// VDI kept as a snapshot with its own data, a new working VDI whose parent
// is "a", sharing a's objects, with the next snap_id.
func TestRebaseGoto(t *testing.T) {
	parallel(t)
	s, _ := qemuSheep(t)
	p := startDelVdiProxy(t, s)
	d := &qemuDriver{t: t, network: "tcp", addr: p.addr}
	h := d.mustCreate("Alice", qemuCreateOpts{size: 64 << 20})
	if h != 0x15d167 {
		t.Fatalf("Alice created at %x, want its name hash 15d167", h)
	}
	img := d.mustOpen("Alice")
	a := randomBytes(8 << 20)
	img.mustWrite(0, a)
	w1 := img.mustSnapshot("a")
	patch := []byte("changed after the snapshot")
	img.mustWrite(4096, patch)
	tail := []byte("a new object")
	img.mustWrite(8<<20, tail)

	p.armed.Store(true)
	if err := img.gotoSnapshot(0, "a"); err != nil {
		t.Fatal(err)
	}
	if p.failed.Load() != 1 {
		t.Fatal("the goto sent no DEL_VDI for the proxy to fail")
	}
	w2 := img.vid()
	if w2 != w1+1 || img.index[0] != h || img.index[1] != h || img.index[2] != 0 {
		t.Fatalf("after the rebase: vid %x (want %x) index %x", w2, w1+1, img.index[:3])
	}
	if v := img.view(); v.parent() != h || v.snapID() != 3 || v.snapCtime() != 0 || v.tag() != "" || v.vdiSize() != 64<<20 {
		t.Fatalf("new working VDI: parent %x snap_id %d snap_ctime %x tag %q size %d", v.parent(), v.snapID(), v.snapCtime(), v.tag(), v.vdiSize())
	}
	if old, idx := d.inodeOf(w1); old.snapCtime() == 0 || old.name() != "Alice" || idx[0] != w1 || idx[1] != h || idx[2] != w1 {
		t.Fatalf("old working VDI %x: snap_ctime %x name %q index %x", w1, old.snapCtime(), old.name(), idx[:3])
	}
	if got := img.mustRead(0, len(a)+4096); !bytes.Equal(got, append(bytes.Clone(a), make([]byte, 4096)...)) {
		t.Fatal("after the rebase the image does not read as the snapshot")
	}
	// The old working VDI is a snapshot now: nothing of it is reclaimed.
	for _, idx := range []uint32{0, 2} {
		if !hasObjectFile(s, sdDataOid(w1, idx)) {
			t.Fatalf("object %d of the old working VDI, now a snapshot, is gone", idx)
		}
	}
	rebased := []byte("written after the rebase")
	img.mustWrite(0, rebased) // copy-on-write from a's object 0
	img.mustClose()
	if l := d.snapshotList("Alice"); len(l) != 2 || l[0].vid != h || l[0].tag != "a" || l[1].vid != w1 || l[1].id != 2 {
		t.Fatalf("QEMU's snapshot list: %+v", l)
	}

	want := "s Alice 1 67108864 8388608 0 T 15d167 1 a 22\n" +
		"s Alice 2 67108864 8388608 4194304 T 15d168 1  22\n" +
		"= Alice 0 67108864 4194304 4194304 T 15d169 1  22\n"
	if got := rawList(t, s); got != want {
		t.Errorf("vdi list -r after the rebase:\n%s\nwant\n%s", got, want)
	}
	tree := regexp.MustCompile(`^Alice---\[\d{4}-\d\d-\d\d \d\d:\d\d\]-\+-\[\d{4}-\d\d-\d\d \d\d:\d\d\]\n` +
		` {27}` + "`" + `-\(you are here\)\n$`)
	if got := s.must(t, nil, "vdi", "tree"); !tree.MatchString(got) {
		t.Errorf("vdi tree after the rebase:\n%s", got)
	}

	wantWorking := append(bytes.Clone(rebased), a[len(rebased):]...)
	if got := collieReadAt(t, s, "Alice", 0, len(a)); !bytes.Equal(got, wantWorking) {
		t.Error("collie: the working VDI does not read as snapshot a plus the write after the rebase")
	}
	if got := collieReadAt(t, s, "Alice", 0, len(a), "-s", "a"); !bytes.Equal(got, a) {
		t.Error("collie: snapshot a changed")
	}
	wantOld := append(bytes.Clone(a), make([]byte, 4<<20)...)
	copy(wantOld[4096:], patch)
	copy(wantOld[8<<20:], tail)
	if got := collieReadAt(t, s, "Alice", 0, len(wantOld), "-s", "2"); !bytes.Equal(got, wantOld) {
		t.Error("collie: the old working VDI, now snapshot 2, lost its writes")
	}
}
