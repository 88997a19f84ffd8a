package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Space reclamation, vid probing and incremental backups (issue 5).

// TestReclaimSnapshotThenVdi: 64 MiB written, snapshotted, overwritten;
// deleting the snapshot and then the VDI leaves no data object of either.
func TestReclaimSnapshotThenVdi(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	const size = 64 << 20
	s.must(t, nil, "vdi", "create", "space", "64M")
	first := randomBytes(size)
	s.must(t, first, "vdi", "write", "space", "0", strconv.Itoa(size))
	s.must(t, nil, "vdi", "snapshot", "space")
	second := randomBytes(size)
	s.must(t, second, "vdi", "write", "space", "0", strconv.Itoa(size))

	snap := proto.VdiNameHash("space")
	work := snap + 1
	sheeps := []*Sheep{s}
	waitObjects(t, sheeps, snap, 16)
	waitObjects(t, sheeps, work, 16)

	s.must(t, nil, "vdi", "delete", "-s", "1", "space")
	waitObjects(t, sheeps, snap, 0)
	if got := readVdi(t, s, "space", size); !bytes.Equal(got, second) {
		t.Fatal("deleting the snapshot changed the VDI")
	}
	s.must(t, nil, "vdi", "delete", "space")
	waitObjects(t, sheeps, work, 0)
	if list := s.must(t, nil, "vdi", "list", "-r"); list != "" {
		t.Fatalf("rows left: %q", list)
	}
}

// TestReclaimCloneFamily: objects shared by a snapshot, its working VDI
// and a clone stay while any of them reads them, whatever the deletion
// order, and are all gone at the end. The sheep itself drops references
// on DEL_VDI: the last delete goes straight to the server without dog's
// zeroing of the table.
func TestReclaimCloneFamily(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "base", "16M")
	data := randomBytes(16 << 20)
	s.must(t, data, "vdi", "write", "base", "0", strconv.Itoa(len(data)))
	s.must(t, nil, "vdi", "snapshot", "-s", "gold", "base")
	s.must(t, nil, "vdi", "clone", "-s", "gold", "base", "clone")
	patch := randomBytes(4096)
	s.must(t, patch, "vdi", "write", "clone", strconv.Itoa(5<<20), "4096")

	snap, clone := proto.VdiNameHash("base"), proto.VdiNameHash("clone")
	sheeps := []*Sheep{s}
	s.must(t, nil, "vdi", "delete", "-s", "gold", "base")
	s.must(t, nil, "vdi", "delete", "base")
	waitObjects(t, sheeps, snap, 3) // index 1 belongs to the clone now
	want := bytes.Clone(data)
	copy(want[5<<20:], patch)
	if got := readVdi(t, s, "clone", len(data)); !bytes.Equal(got, want) {
		t.Fatal("the clone lost data when its base was deleted")
	}
	waitObjects(t, sheeps, clone, 1)

	// DEL_VDI alone, as QEMU sends it: the server drops the references.
	c := dial(t, s)
	req := proto.NewRequest(proto.OpDelVdi)
	rsp, _, err := c.Do(t.Context(), &req, proto.VdiName("clone", "", true), nil)
	if err != nil || rsp.Result != proto.ResSuccess {
		t.Fatalf("DEL_VDI: %v %v", rsp.Result, err)
	}
	waitObjects(t, sheeps, snap, 0)
	waitObjects(t, sheeps, clone, 0)
}

// TestReclaimReplicas: with 3 nodes and 2 copies, deleting a snapshot and
// its VDI removes the data objects from every replica.
func TestReclaimReplicas(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	s := sheeps[0]
	s.must(t, nil, "cluster", "format", "-c", "2")
	const size = 16 << 20
	s.must(t, nil, "vdi", "create", "rep", "16M")
	s.must(t, randomBytes(size), "vdi", "write", "rep", "0", strconv.Itoa(size))
	s.must(t, nil, "vdi", "snapshot", "rep")
	second := randomBytes(size)
	sheeps[1].must(t, second, "vdi", "write", "rep", "0", strconv.Itoa(size))

	snap := proto.VdiNameHash("rep")
	waitObjects(t, sheeps, snap, 8)
	waitObjects(t, sheeps, snap+1, 8)
	sheeps[2].must(t, nil, "vdi", "delete", "-s", "1", "rep")
	waitObjects(t, sheeps, snap, 0)
	if got := readVdi(t, sheeps[1], "rep", size); !bytes.Equal(got, second) {
		t.Fatal("deleting the snapshot changed the VDI")
	}
	s.must(t, nil, "vdi", "delete", "rep")
	waitObjects(t, sheeps, snap+1, 0)
}

// collidingNames finds two short names with the same 24-bit name hash by
// brute force (a birthday search: a few thousand tries).
func collidingNames(t *testing.T) (string, string) {
	seen := map[uint32]string{}
	for i := 0; ; i++ {
		name := "p" + strconv.Itoa(i)
		h := proto.VdiNameHash(name)
		if other, ok := seen[h]; ok && h < proto.NrVdis-16 {
			return other, name
		}
		seen[h] = name
	}
}

// anotherTopName finds the first 8-digit name after "05421217" whose hash
// is 0xffffff, the last vid (FNV-1a with the 6-digit prefix's state cached:
// about 46 million short hashes).
func anotherTopName(t *testing.T) string {
	const prime = 0x100000001b3
	name := []byte("00000000")
	for p := 0; p < 1000000; p++ {
		h := proto.FNV1a([]byte(fmt.Sprintf("%06d", p)), proto.FNV1aBasis)
		for q := 0; q < 100; q++ {
			x := (h ^ uint64('0'+q/10)) * prime
			x = (x ^ uint64('0'+q%10)) * prime
			if x&(proto.NrVdis-1) != proto.NrVdis-1 {
				continue
			}
			copy(name, fmt.Sprintf("%06d%02d", p, q))
			if string(name) != "05421217" {
				return string(name)
			}
		}
	}
	t.Fatal("no second name hashing to 0xffffff")
	return ""
}

// TestProbeCollisions: two names with the same hash both work (the second
// takes the next free vid), and a name hashing to 0xffffff when that vid is
// taken wraps around to the bottom of the vid space.
func TestProbeCollisions(t *testing.T) {
	parallel(t)
	a, b := collidingNames(t)
	top1, top2 := "05421217", anotherTopName(t)
	for _, n := range []string{top1, top2} {
		if h := proto.VdiNameHash(n); h != 0xffffff {
			t.Fatalf("%q hashes to %x", n, h)
		}
	}
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	h := proto.VdiNameHash(a)
	data := map[string][]byte{}
	for _, n := range []string{a, b, top1, top2} {
		s.must(t, nil, "vdi", "create", n, "8M")
		data[n] = randomBytes(1 << 20)
		s.must(t, data[n], "vdi", "write", n, "0", strconv.Itoa(1<<20))
	}
	// Snapshots take further slots of each chain: 0xffffff's wraps to 2.
	s.must(t, nil, "vdi", "snapshot", a)
	s.must(t, nil, "vdi", "snapshot", top2)
	want := []string{
		fmt.Sprintf("= %s 0 8388608 0 4194304 T 2 1  22", top2),
		fmt.Sprintf("s %s 1 8388608 4194304 0 T 1 1  22", top2),
		fmt.Sprintf("s %s 1 8388608 4194304 0 T %x 1  22", a, h),
		fmt.Sprintf("= %s 0 8388608 4194304 0 T %x 1  22", b, h+1),
		fmt.Sprintf("= %s 0 8388608 0 4194304 T %x 1  22", a, h+2),
		fmt.Sprintf("= %s 0 8388608 4194304 0 T ffffff 1  22", top1),
	}
	list := rawList(t, s)
	for _, row := range want {
		if !strings.Contains(list, row+"\n") {
			t.Errorf("vdi list -r lacks %q:\n%s", row, list)
		}
	}
	for n, d := range data {
		if got := readVdi(t, s, n, len(d)); !bytes.Equal(got, d) {
			t.Errorf("%q reads other data", n)
		}
	}
	// Deleting one member of a chain keeps the others reachable.
	s.must(t, nil, "vdi", "delete", b)
	s.must(t, nil, "vdi", "delete", top1)
	for _, n := range []string{a, top2} {
		if got := readVdi(t, s, n, len(data[n])); !bytes.Equal(got, data[n]) {
			t.Errorf("%q unreadable after deleting its neighbours", n)
		}
		if got := readVdi(t, s, n, len(data[n]), "-s", "1"); !bytes.Equal(got, data[n]) {
			t.Errorf("snapshot of %q unreadable after deleting its neighbours", n)
		}
	}
	if r := s.collie(t, nil, "vdi", "read", b, "0", "512"); r.Code != 1 {
		t.Errorf("read of deleted %q: %+v", b, r)
	}
}

// TestBackupRestore: the diff between snapshots 1 and 2 of a VDI, restored
// onto a copy of snapshot 1 of another VDI, gives snapshot 2's bytes.
func TestBackupRestore(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	const size = 16 << 20
	base := randomBytes(size)
	for _, n := range []string{"src", "dst"} {
		s.must(t, nil, "vdi", "create", n, "16M")
		s.must(t, base[:12<<20], "vdi", "write", n, "0", strconv.Itoa(12<<20))
		s.must(t, nil, "vdi", "snapshot", n)
	}
	changes := []struct{ off, n int }{{100, 4096}, {5 << 20, 1 << 20}, {13 << 20, 8192}}
	want := bytes.Clone(base)
	clear(want[12<<20:])
	for _, c := range changes {
		p := randomBytes(c.n)
		copy(want[c.off:], p)
		s.must(t, p, "vdi", "write", "src", strconv.Itoa(c.off), strconv.Itoa(c.n))
	}
	s.must(t, nil, "vdi", "snapshot", "src")
	if got := readVdi(t, s, "src", size, "-s", "2"); !bytes.Equal(got, want) {
		t.Fatal("src:2 does not hold the changes")
	}

	diff := []byte(s.must(t, nil, "vdi", "backup", "-F", "1", "-s", "2", "src"))
	if len(diff) < 8 || binary.LittleEndian.Uint32(diff) != 1 || binary.LittleEndian.Uint32(diff[4:]) != 0x11921192 {
		t.Fatalf("backup stream header %x", diff[:min(len(diff), 8)])
	}
	if len(diff) > 2<<20 {
		t.Errorf("backup of ~1 MiB of changes is %d bytes", len(diff))
	}
	if end := diff[len(diff)-16:]; binary.LittleEndian.Uint32(end) != 0xffffffff {
		t.Errorf("backup stream ends with %x", end)
	}

	s.must(t, diff, "vdi", "restore", "-s", "1", "dst")
	if got := readVdi(t, s, "dst", size, "-s", "2"); !bytes.Equal(got, want) {
		t.Fatal("dst:2 restored from the backup differs from src:2")
	}
	if got := readVdi(t, s, "dst", size, "-s", "1"); !bytes.Equal(got[:12<<20], base[:12<<20]) {
		t.Fatal("restore changed dst:1")
	}
	list := rawList(t, s)
	if strings.Count(list, "s dst ") != 2 || strings.Count(list, "= dst ") != 1 {
		t.Errorf("dst rows after restore:\n%s", list)
	}
	if r := s.collie(t, diff[:20], "vdi", "restore", "-s", "1", "src"); r.Code == 0 {
		t.Error("a truncated backup stream was accepted")
	}
}
