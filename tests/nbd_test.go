package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needTools skips the test when a client binary is not installed (Debian:
// qemu-utils, libnbd-bin, nbdkit, fio).
func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipUnlessRequired(t, "%s is not installed (apt-get install qemu-utils libnbd-bin nbdkit fio)", n)
		}
	}
}

// freeTCPPort returns a loopback TCP port nobody listens on right now.
func freeTCPPort(t testing.TB) int {
	t.Helper()
	// Below the sheeps' triples (11000 and up) and below the kernel's
	// ephemeral range, so no client connection of a test running beside
	// this one takes the port between this check and the server's bind.
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 1000; i++ {
		p := 5000 + portRand.Intn(11000-5000)
		if portTaken[p] || !inLane(p) {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		portTaken[p] = true
		return p
	}
	t.Fatal("no free TCP port found")
	return 0
}

// nbdSheep starts a formatted one-node copies=1 sheep that serves NBD on a
// free loopback port, and returns it with the address of its NBD server.
func nbdSheep(t testing.TB, extra ...string) (*Sheep, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	s := startSheep(t, append([]string{"--nbd", addr}, extra...)...)
	s.must(t, nil, "cluster", "format", "--copies=1")
	return s, addr
}

func nbdURI(addr, export string) string { return "nbd://" + addr + "/" + export }

// tool runs a client program and fails the test unless it exits 0.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := run(t, nil, name, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// qemuIO runs qemu-io commands against an export; a failed command or
// pattern check fails the test.
func qemuIO(t testing.TB, uri string, cmds ...string) string {
	t.Helper()
	return qemuIOWith(t, nil, uri, cmds...)
}

// qemuIOWith is qemuIO with extra qemu-io options (-r: read-only).
func qemuIOWith(t testing.TB, opts []string, uri string, cmds ...string) string {
	t.Helper()
	args := append(append([]string{}, opts...), "-f", "raw", uri)
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := tool(t, "qemu-io", args...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %s:\n%s", strings.Join(cmds, "; "), out)
	}
	return out
}

// sparseImage writes a 64 MiB raw file with random data at a few places
// and holes elsewhere, and returns its path and content.
func sparseImage(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	img := make([]byte, 64<<20)
	for _, r := range [][2]int{{0, 1 << 20}, {10 << 20, 3 << 20}, {40<<20 + 4096, 4096}, {63 << 20, 1 << 20}} {
		rand.Read(img[r[0] : r[0]+r[1]])
	}
	path := filepath.Join(dir, "src.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(img))); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 1 << 20}, {10 << 20, 3 << 20}, {40<<20 + 4096, 4096}, {63 << 20, 1 << 20}} {
		if _, err := f.WriteAt(img[r[0]:r[0]+r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	return path, img
}

func TestNBDList(t *testing.T) {
	parallel(t)
	needTools(t, "nbdinfo")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "Alice", "64M")
	s.must(t, nil, "vdi", "create", "Bob", "16M")
	s.must(t, []byte("hello"), "vdi", "write", "Alice", "0", "5")
	s.must(t, nil, "vdi", "snapshot", "-s", "daily", "Alice")
	s.must(t, nil, "vdi", "create", "Gone", "4M")
	s.must(t, nil, "vdi", "delete", "Gone")

	out := tool(t, "nbdinfo", "--list", "--json", "nbd://"+addr)
	var list struct {
		Exports []struct {
			Name     string `json:"export-name"`
			Size     int64  `json:"export-size"`
			ReadOnly bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, e := range list.Exports {
		got[e.Name] = e.ReadOnly
	}
	want := map[string]bool{"Alice": false, "Alice:1": true, "Alice:daily": true, "Bob": false}
	if len(got) != len(want) {
		t.Fatalf("exports %v, want %v", got, want)
	}
	for name, ro := range want {
		if r, ok := got[name]; !ok || r != ro {
			t.Fatalf("exports %v, want %v", got, want)
		}
	}

	// An unknown export is refused with a message naming it.
	r := run(t, nil, "nbdinfo", nbdURI(addr, "Nobody"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "Nobody") {
		t.Fatalf("nbdinfo of an unknown export: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// qemu-img converts a sparse image into an export; the export compares
// equal, collie reads the same bytes, and qemu-img map sees the holes.
func TestNBDQemuImg(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-img")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "img", "64M")
	src, want := sparseImage(t, t.TempDir())
	uri := nbdURI(addr, "img")

	tool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	if got := s.must(t, nil, "vdi", "read", "img"); got != string(want) {
		t.Fatal("collie vdi read differs from the image converted in through NBD")
	}

	var extents []struct {
		Start, Length int64
		Data, Zero    bool
	}
	out := tool(t, "qemu-img", "map", "--output=json", "-f", "raw", uri)
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	// Objects are 4 MiB: data in objects 0, 2, 3, 10 and 15.
	dataObj := map[int64]bool{0: true, 2: true, 3: true, 10: true, 15: true}
	var covered int64
	for _, e := range extents {
		if e.Start != covered {
			t.Fatalf("map not contiguous at %d: %s", covered, out)
		}
		covered += e.Length
		for o := e.Start; o < e.Start+e.Length; o += 4 << 20 {
			if e.Data != dataObj[o>>22] || e.Zero == e.Data {
				t.Fatalf("object %d: data=%v zero=%v\n%s", o>>22, e.Data, e.Zero, out)
			}
		}
	}
	if covered != 64<<20 {
		t.Fatalf("map covers %d bytes\n%s", covered, out)
	}
}

// qemu-io: aio writes, flush and pattern reads; discard and write-zeroes
// read back as zeros; bytes written by collie read through NBD and back.
func TestNBDQemuIO(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "Bob", "16M")
	uri := nbdURI(addr, "Bob")

	qemuIO(t, uri,
		"aio_write -P 0x5a 0 1M", "aio_write -P 0x5b 1M 1M", "aio_write -P 0x5c 4095k 2M", "aio_flush",
		"read -P 0x5a 0 1M", "read -P 0x5b 1M 1M", "read -P 0x5c 4095k 2M")
	// Fresh connection: the data is in the cluster, not in a session.
	qemuIO(t, uri, "read -P 0x5a 0 1M", "read -P 0x5b 1M 1M", "read -P 0x5c 4095k 2M", "read -P 0 6143k 1k")
	got := s.must(t, nil, "vdi", "read", "Bob", "0", strconv.Itoa(2<<20))
	if got != strings.Repeat("\x5a", 1<<20)+strings.Repeat("\x5b", 1<<20) {
		t.Fatal("collie reads other bytes than qemu-io wrote")
	}

	qemuIO(t, uri,
		"write -P 0x11 0 12M",
		"discard 0 4M",    // a whole object: freed
		"discard 5M 1M",   // part of one: zeroed
		"write -z 8M 64k", // zeroes inside an object
		"write -z -u 12M 4M",
		"aio_flush",
		"read -P 0 0 4M", "read -P 0x11 4M 1M", "read -P 0 5M 1M", "read -P 0x11 6M 2M",
		"read -P 0 8M 64k", "read -P 0x11 8256k 3008k", "read -P 0 12M 4M")
	want := bytes.Repeat([]byte{0x11}, 12<<20)
	clear(want[0 : 4<<20])
	clear(want[5<<20 : 6<<20])
	clear(want[8<<20 : 8<<20+64<<10])
	if got := s.must(t, nil, "vdi", "read", "Bob", "0", strconv.Itoa(12<<20)); got != string(want) {
		t.Fatal("collie reads other bytes than discard and write-zeroes left")
	}

	// And the other way: collie writes, NBD reads.
	data := bytes.Repeat([]byte{0x77}, 3<<20)
	s.must(t, data, "vdi", "write", "Bob", strconv.Itoa(9<<20), strconv.Itoa(len(data)))
	qemuIO(t, uri, "read -P 0x77 9M 3M", "read -P 0x11 8256k 832k")
}

// nbdcopy (four connections, many requests in flight each) copies an
// image into an export and back out unchanged.
func TestNBDCopy(t *testing.T) {
	parallel(t)
	needTools(t, "nbdcopy")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "copy", "64M")
	dir := t.TempDir()
	src, want := sparseImage(t, dir)
	uri := nbdURI(addr, "copy")
	tool(t, "nbdcopy", src, uri)
	if got := s.must(t, nil, "vdi", "read", "copy"); got != string(want) {
		t.Fatal("collie reads other bytes than nbdcopy wrote")
	}
	out := filepath.Join(dir, "out.raw")
	tool(t, "nbdcopy", uri, out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("nbdcopy out of the export differs from the source")
	}

	// Dense random data through every connection at once.
	rand.Read(want)
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "nbdcopy", "--connections=4", "--requests=32", src, uri)
	tool(t, "nbdcopy", uri, out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("dense copy differs")
	}
}

// A snapshot export reads the snapshot's data and refuses writes, both in
// the client (READ_ONLY flag) and in the server (EPERM). A connection that
// has the working VDI open when the snapshot is taken goes on writing to
// the new working VDI.
func TestNBDSnapshot(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "Alice", "16M")
	qemuIO(t, nbdURI(addr, "Alice"), "write -P 0x01 0 5M")

	live := dialNBD(t, addr, "Alice")
	if errno := live.write(6<<20, []byte("before")); errno != 0 {
		t.Fatalf("write: errno %d", errno)
	}
	s.must(t, nil, "vdi", "snapshot", "-s", "first", "Alice")
	if errno := live.write(6<<20, []byte("after!")); errno != 0 {
		t.Fatalf("write after the snapshot on the open connection: errno %d", errno)
	}
	live.close()

	for _, name := range []string{"Alice:1", "Alice:first"} {
		qemuIOWith(t, []string{"-r"}, nbdURI(addr, name), "read -P 0x01 0 5M", "read -P 0 5M 1M")
		if r := run(t, nil, "qemu-io", "-f", "raw", nbdURI(addr, name), "-c", "write 0 512"); r.Code == 0 {
			t.Fatalf("qemu-io wrote to snapshot %s:\n%s", name, r.Stdout)
		}
		raw := dialNBD(t, addr, name)
		if raw.flags&2 == 0 {
			t.Fatalf("%s: transmission flags %#x lack READ_ONLY", name, raw.flags)
		}
		if errno := raw.write(0, []byte("x")); errno != 1 {
			t.Fatalf("%s: write answered errno %d, want EPERM", name, errno)
		}
		if data, errno := raw.read(6<<20, 6); errno != 0 || string(data) != "before" {
			t.Fatalf("%s: reads %q (errno %d)", name, data, errno)
		}
		raw.close()
	}
	if got := s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(6<<20), "6"); got != "after!" {
		t.Fatalf("working VDI reads %q", got)
	}
	if got := s.must(t, nil, "vdi", "read", "-s", "first", "Alice", strconv.Itoa(6<<20), "6"); got != "before" {
		t.Fatalf("collie reads the snapshot as %q", got)
	}
}

// Two connections to one export (what CAN_MULTI_CONN invites) see each
// other's writes, also into objects the other allocated after it opened.
func TestNBDMultiConn(t *testing.T) {
	parallel(t)
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "Alice", "16M")
	a, b := dialNBD(t, addr, "Alice"), dialNBD(t, addr, "Alice")
	if a.flags&(1<<8) == 0 {
		t.Fatalf("transmission flags %#x lack CAN_MULTI_CONN", a.flags)
	}
	if _, errno := a.read(0, 16); errno != 0 { // a has seen object 0 as a hole
		t.Fatalf("read: errno %d", errno)
	}
	if errno := b.write(0, []byte("from b")); errno != 0 {
		t.Fatalf("write: errno %d", errno)
	}
	if errno := a.write(100, []byte("from a")); errno != 0 {
		t.Fatalf("write: errno %d", errno)
	}
	for _, c := range []*rawNBD{a, b} {
		head, _ := c.read(0, 6)
		mid, _ := c.read(100, 6)
		if string(head) != "from b" || string(mid) != "from a" {
			t.Fatalf("reads %q and %q", head, mid)
		}
	}
	a.close()
	b.close()
	if got := s.must(t, nil, "vdi", "read", "Alice", "0", "106"); got[:6] != "from b" || got[100:] != "from a" {
		t.Fatalf("collie reads %q", got)
	}
}

// rawNBD is a bare NBD client (simple replies, one request at a time), to
// see exactly what the server answers where real clients refuse early.
type rawNBD struct {
	t     testing.TB
	c     net.Conn
	size  uint64
	flags uint16
}

func dialNBD(t testing.TB, addr, export string) *rawNBD {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	n := &rawNBD{t: t, c: c}
	be := binary.BigEndian
	hello := n.readN(18)
	if be.Uint64(hello) != 0x4e42444d41474943 || be.Uint64(hello[8:]) != 0x49484156454F5054 {
		t.Fatalf("bad hello %x", hello)
	}
	// Client flags: fixed newstyle, no zeroes. Then NBD_OPT_GO (7).
	msg := be.AppendUint32(nil, 3)
	msg = be.AppendUint64(msg, 0x49484156454F5054)
	msg = be.AppendUint32(msg, 7)
	msg = be.AppendUint32(msg, uint32(4+len(export)+2))
	msg = be.AppendUint32(msg, uint32(len(export)))
	msg = append(msg, export...)
	msg = be.AppendUint16(msg, 0)
	n.writeAll(msg)
	for {
		h := n.readN(20)
		typ, data := be.Uint32(h[12:]), n.readN(int(be.Uint32(h[16:])))
		switch {
		case typ == 1: // NBD_REP_ACK
			return n
		case typ == 3 && be.Uint16(data) == 0: // NBD_INFO_EXPORT
			n.size, n.flags = be.Uint64(data[2:]), be.Uint16(data[10:])
		case typ&(1<<31) != 0:
			t.Fatalf("GO %q: error %#x %s", export, typ, data)
		}
	}
}

func (n *rawNBD) readN(k int) []byte {
	n.t.Helper()
	b := make([]byte, k)
	if _, err := io.ReadFull(n.c, b); err != nil {
		n.t.Fatalf("nbd read: %v", err)
	}
	return b
}

func (n *rawNBD) writeAll(b []byte) {
	n.t.Helper()
	if _, err := n.c.Write(b); err != nil {
		n.t.Fatalf("nbd write: %v", err)
	}
}

func (n *rawNBD) request(typ uint16, off uint64, length uint32, data []byte) uint32 {
	n.t.Helper()
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, 42)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, length)
	n.writeAll(append(b, data...))
	r := n.readN(16)
	if be.Uint32(r) != 0x67446698 || be.Uint64(r[8:]) != 42 {
		n.t.Fatalf("bad reply %x", r)
	}
	return be.Uint32(r[4:])
}

func (n *rawNBD) write(off uint64, data []byte) uint32 {
	return n.request(1, off, uint32(len(data)), data)
}

func (n *rawNBD) read(off uint64, length uint32) ([]byte, uint32) {
	if errno := n.request(0, off, length, nil); errno != 0 {
		return nil, errno
	}
	return n.readN(int(length)), 0
}

func (n *rawNBD) close() {
	n.disc()
	n.c.Close()
}

// disc sends NBD_CMD_DISC, which has no reply.
func (n *rawNBD) disc() {
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint32(b, 2) // flags 0, type DISC
	b = append(b, make([]byte, 20)...)
	n.writeAll(b)
}

// Killing a node that is not the NBD gateway while nbdcopy writes into an
// export (3 nodes, copies=3) does not fail the copy, and the export then
// holds exactly the source.
func TestNBDNodeFailureDuringCopy(t *testing.T) {
	parallel(t)
	needTools(t, "nbdcopy")
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startNBDCluster(t, 3, 3, addr)
	src := filepath.Join(t.TempDir(), "src.raw")
	want := make([]byte, 256<<20)
	rand.Read(want)
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	uri := nbdURI(addr, "bench")
	cmd := exec.Command("nbdcopy", "--requests=16", src, uri)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("nbdcopy ended (%v) before the node was killed; the test needs a longer copy\n%s", err, out.String())
	default:
	}
	sheeps[2].Kill()
	t0 := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("nbdcopy failed after a node was killed: %v\n%s", err, out.String())
	}
	t.Logf("nbdcopy finished %v after the kill", time.Since(t0))
	got := sheeps[0].must(t, nil, "vdi", "read", "bench", "0", strconv.Itoa(len(want)))
	if got != string(want) {
		t.Fatal("the export differs from the source after the copy")
	}
	// And read back over NBD from the survivors (the export is 1 GiB, the
	// rest of it never written).
	tool(t, "nbdcopy", uri, src+".out")
	b, err := os.ReadFile(src + ".out")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != nbdBenchSize || !bytes.Equal(b[:len(want)], want) || !bytes.Equal(b[len(want):], make([]byte, len(b)-len(want))) {
		t.Fatal("nbdcopy out of the export differs from the source")
	}
}
