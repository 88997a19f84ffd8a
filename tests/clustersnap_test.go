package tests

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
)

// cluster snapshot save/list/load/show (Sheepdog's test 030): the snapshot
// VDIs of a cluster are saved to a directory, and loaded back into the
// reformatted cluster, where each VDI gets a working VDI on top of its
// latest snapshot; by tag or index, all VDIs or the ones named.
func TestClusterSnapshotSaveLoad(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	s := sheeps[0]
	dir := filepath.Join(t.TempDir(), "farm")
	s.must(t, nil, "cluster", "format", "--copies=2")
	gen := func() []byte { b := make([]byte, 10<<20); rand.Read(b); return b }
	data := map[string][2][]byte{}
	for _, name := range []string{"test1", "test2"} {
		s.must(t, nil, "vdi", "create", name, "10M")
		d1 := gen()
		s.must(t, d1, "vdi", "write", name)
		s.must(t, nil, "vdi", "snapshot", name)
		data[name] = [2][]byte{d1}
	}
	if r := s.collie(t, nil, "cluster", "snapshot", "save", "1st", dir); r.Code != 64 || r.Stderr != "Tag should not start with number.\n" {
		t.Fatalf("save with a numeric tag: exit %d, %q", r.Code, r.Stderr)
	}
	s.must(t, nil, "cluster", "snapshot", "save", "s1", dir)
	if r := s.collie(t, nil, "cluster", "snapshot", "save", "s1", dir); r.Code != 2 || !strings.Contains(r.Stderr, "Snapshot tag has already been used") {
		t.Fatalf("save with a used tag: exit %d, %q", r.Code, r.Stderr)
	}
	for _, name := range []string{"test1", "test2"} {
		d2 := gen()
		s.must(t, d2, "vdi", "write", name)
		s.must(t, nil, "vdi", "snapshot", name)
		data[name] = [2][]byte{data[name][0], d2}
	}
	s.must(t, nil, "cluster", "snapshot", "save", "s2", dir)
	out := s.must(t, nil, "cluster", "snapshot", "list", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "Index\t\tTag\t\tSnapshot Time" || !strings.HasPrefix(lines[1], "1\t\ts1\t\t") || !strings.HasPrefix(lines[2], "2\t\ts2\t\t") {
		t.Fatalf("snapshot list:\n%s", out)
	}
	if out := s.must(t, nil, "cluster", "snapshot", "show", "s2", dir, "test2"); !strings.HasPrefix(out, "1. VDI id: ") || strings.Count(out, "name: test2") != 2 {
		t.Fatalf("snapshot show:\n%s", out)
	}

	read := func(name, snap string) string {
		t.Helper()
		args := []string{"vdi", "read", name}
		if snap != "" {
			args = []string{"vdi", "read", "-s", snap, name}
		}
		return sheeps[1].must(t, nil, args...)
	}
	// Load s1 (the cluster is not empty: confirmed on stdin).
	s.must(t, []byte("yes\n"), "cluster", "snapshot", "load", "s1", dir)
	list := s.must(t, nil, "vdi", "list", "-r")
	if strings.Count(list, "\n") != 4 {
		t.Fatalf("vdi list after loading s1:\n%s", list)
	}
	for name, d := range data {
		if read(name, "") != string(d[0]) || read(name, "1") != string(d[0]) {
			t.Fatalf("%s after loading s1 does not read as saved", name)
		}
	}
	// Load snapshot 2 by index: both snapshots and a working VDI on the
	// latest; the working VDI takes writes, the snapshots keep theirs.
	s.must(t, []byte("yes\n"), "cluster", "snapshot", "load", "2", dir)
	for name, d := range data {
		if read(name, "1") != string(d[0]) || read(name, "2") != string(d[1]) || read(name, "") != string(d[1]) {
			t.Fatalf("%s after loading snapshot 2 does not read as saved", name)
		}
	}
	s.must(t, []byte("new"), "vdi", "write", "test1", "0", "3")
	if got := read("test1", ""); got[:3] != "new" || got[3:] != string(data["test1"][1][3:]) {
		t.Fatal("the working VDI over a loaded snapshot does not take a write")
	}
	if read("test1", "2") != string(data["test1"][1]) {
		t.Fatal("a write to the working VDI changed the loaded snapshot")
	}
	// Only the VDIs named.
	s.must(t, []byte("yes\n"), "cluster", "snapshot", "load", "s2", dir, "test2")
	list = s.must(t, nil, "vdi", "list", "-r")
	if strings.Contains(list, "test1") || strings.Count(list, "test2") != 3 {
		t.Fatalf("vdi list after loading test2 of s2:\n%s", list)
	}
	if read("test2", "") != string(data["test2"][1]) {
		t.Fatal("test2 loaded alone does not read as saved")
	}
	if r := s.collie(t, nil, "cluster", "snapshot", "load", "s9", dir); r.Code != 2 || r.Stderr != "Snapshot index or tag does not exist.\nFail to load snapshot\n" {
		t.Fatalf("load of a missing tag: exit %d, %q", r.Code, r.Stderr)
	}
}
