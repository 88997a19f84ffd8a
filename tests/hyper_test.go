package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// inodeFile reads the inode object of vid from s's store.
func inodeFile(t *testing.T, s *Sheep, vid uint32) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "obj", fmt.Sprintf("%016x", uint64(1)<<63|uint64(vid)<<32)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// btreeRoot decodes the header of a hyper volume's B-tree root, which
// starts where data_vdi_id does (4664): magic, depth, entries.
func btreeRoot(t *testing.T, ino []byte) (magic, depth uint16, entries uint32) {
	t.Helper()
	r := ino[4664:]
	return binary.LittleEndian.Uint16(r), binary.LittleEndian.Uint16(r[2:]), binary.LittleEndian.Uint32(r[4:])
}

// vdiListRow is the raw `vdi list -r` row of name: "= name id size used
// shared ctime vid copies tag shift".
func vdiListRow(t *testing.T, s *Sheep, name string) []string {
	t.Helper()
	for _, line := range strings.Split(s.must(t, nil, "vdi", "list", "-r"), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[1] == name {
			return f
		}
	}
	t.Fatalf("%s not in vdi list", name)
	return nil
}

// A hyper volume (`vdi create -y`, 16 PiB) is read and written beyond 4
// TiB through NBD and through collie, which see the same bytes; its index
// is a B-tree in Sheepdog's layout (a depth-1 root in the inode from the
// start, which Sheepdog's dog requires); vdi list counts its objects; a
// node failure loses nothing; a delete removes its objects.
func TestHyperVolume(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io")
	nbd := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	var sheeps []*Sheep
	for i := range 3 {
		extra := []string{"-z", strconv.Itoa(i)}
		if i == 0 {
			extra = append(extra, "--nbd", nbd)
		} else {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, extra...))
	}
	for _, s := range sheeps {
		waitNodes(t, s, 3)
	}
	s := sheeps[0]
	s.must(t, nil, "cluster", "format", "--copies=2")

	// Without -y, 16P is refused with dog's message.
	r := s.collie(t, nil, "vdi", "create", "test", "16P")
	if r.Code != 64 || !strings.Contains(r.Stderr, "please use '-y' to create a hyper volume") {
		t.Fatalf("create 16P without -y: exit %d, %s", r.Code, r.Stderr)
	}
	s.must(t, nil, "vdi", "create", "-y", "test", "16P")
	row := vdiListRow(t, s, "test")
	if row[3] != strconv.FormatUint(1<<54, 10) || row[4] != "0" || row[len(row)-1] != "22" {
		t.Fatalf("vdi list -r row %q: want size 2^54, used 0, shift 22", row)
	}
	vid64, _ := strconv.ParseUint(row[7], 16, 32)
	vid := uint32(vid64)
	checkRoots(t, sheeps, vid, 0)

	// NBD writes at 0, 5 TiB and near the end; collie writes at 15P.
	uri := nbdURI(nbd, "test")
	qemuIO(t, uri, "write -P 0x11 0 64k", "write -P 0x22 5T 1M", "write -P 0x33 16383T 4k")
	data := make([]byte, 2<<20)
	rand.Read(data)
	s.must(t, data, "vdi", "write", "test", "15P", strconv.Itoa(len(data)))
	qemuIO(t, uri, "read -P 0x11 0 64k", "read -P 0x22 5T 1M", "read -P 0x33 16383T 4k", "read -P 0 6T 1M")
	if got := sheeps[1].must(t, nil, "vdi", "read", "test", "5T", "1M"); got != strings.Repeat("\x22", 1<<20) {
		t.Fatal("collie reads other bytes at 5T than NBD wrote")
	}
	out := qemuIO(t, uri, "read -v 15P 16")
	if !strings.Contains(out, fmt.Sprintf("%02x %02x", data[0], data[1])) {
		t.Fatalf("NBD reads other bytes at 15P than collie wrote:\n%s", out)
	}

	// Four objects: 0, 5T, 15P (2 MiB in one 4 MiB object), 16383T.
	row = vdiListRow(t, s, "test")
	if row[4] != strconv.Itoa(4*4<<20) {
		t.Fatalf("vdi list -r row %q: want used %d", row, 4*4<<20)
	}
	checkRoots(t, sheeps, vid, 4)
	if n := len(hyperObjects(sheeps, vid)); n != 4*2 {
		t.Fatalf("%d data object copies of the hyper volume, want 4 objects x 2 copies", n)
	}

	// A node fails: the data is still there.
	sheeps[2].Kill()
	waitNodes(t, s, 2)
	if got := s.must(t, nil, "vdi", "read", "test", "15P", strconv.Itoa(len(data))); !bytes.Equal([]byte(got), data) {
		t.Fatal("15P reads other bytes after a node failed")
	}
	qemuIO(t, uri, "read -P 0x22 5T 1M")

	// Snapshots of hyper volumes are refused, as by dog.
	if r := s.collie(t, nil, "vdi", "snapshot", "test"); r.Code == 0 {
		t.Fatal("snapshot of a hyper volume succeeded")
	}
	// Delete removes its data objects.
	s.must(t, nil, "vdi", "delete", "test")
	if left := hyperObjects(sheeps[:2], vid); len(left) != 0 {
		t.Fatalf("objects of the deleted hyper volume are left: %v", left)
	}
}

// checkRoots checks the B-tree root in every copy of vid's inode (two):
// Sheepdog's magic, depth 1, entries as given.
func checkRoots(t *testing.T, sheeps []*Sheep, vid uint32, entries uint32) {
	t.Helper()
	copies := 0
	for _, sh := range sheeps {
		if _, err := os.Stat(filepath.Join(sh.Dir, "obj", fmt.Sprintf("%016x", uint64(1)<<63|uint64(vid)<<32))); err != nil {
			continue
		}
		copies++
		if m, d, n := btreeRoot(t, inodeFile(t, sh, vid)); m != 0x6274 || d != 1 || n != entries {
			t.Fatalf("root on %s: magic %#x depth %d entries %d, want 0x6274, 1, %d", sh.Addr(), m, d, n, entries)
		}
	}
	if copies != 2 {
		t.Fatalf("%d copies of inode %x, want 2", copies, vid)
	}
}

// hyperObjects lists the data object files of vid in the sheeps' stores.
func hyperObjects(sheeps []*Sheep, vid uint32) []string {
	var all []string
	for _, sh := range sheeps {
		files, _ := filepath.Glob(filepath.Join(sh.Dir, "obj", fmt.Sprintf("00%06x*", vid)))
		all = append(all, files...)
	}
	return all
}
