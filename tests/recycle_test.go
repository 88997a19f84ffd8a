package tests

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// vdiVids maps "name snapid" to the vid of each row of `vdi list -r`.
func vdiVids(t *testing.T, s *Sheep) map[string]string {
	t.Helper()
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s.must(t, nil, "vdi", "list", "-r")), "\n") {
		f := strings.Fields(line)
		if len(f) > 7 {
			rows[f[1]+" "+f[2]] = f[7]
		}
	}
	return rows
}

// storeObjects lists the object files of a kind ("80": inodes, "00":
// data) in the sheeps' stores.
func storeObjects(sheeps []*Sheep, prefix string) []string {
	var all []string
	for _, s := range sheeps {
		files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", prefix+"*"))
		all = append(all, files...)
	}
	return all
}

// format -R (Sheepdog's test 106): vids are taken from 1 up; a family (a
// VDI and its snapshots) keeps its vids, and its name, while any member
// lives; once all are deleted their inodes are removed and the vids are
// taken again.
func TestRecycleVid(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	s := sheeps[0]
	s.must(t, nil, "cluster", "format", "-R", "--copies=2")
	s.must(t, nil, "vdi", "create", "test", "16M")
	s.must(t, []byte("hello"), "vdi", "write", "test", "0", "5")
	for range 8 {
		s.must(t, nil, "vdi", "snapshot", "test")
	}
	got := vdiVids(t, s)
	for i := 1; i <= 8; i++ {
		if v := got["test "+strconv.Itoa(i)]; v != strconv.Itoa(i) {
			t.Fatalf("snapshot %d has vid %q, want %d (rows %v)", i, v, i, got)
		}
	}
	if got["test 0"] != "9" {
		t.Fatalf("working VDI has vid %q, want 9", got["test 0"])
	}

	s.must(t, nil, "vdi", "delete", "test")
	if len(vdiVids(t, s)) != 8 {
		t.Fatal("deleting the working VDI took its snapshots")
	}
	r := s.collie(t, nil, "vdi", "create", "test", "16M")
	if r.Code != 1 || r.Stderr != "Failed to create VDI test: VDI exists already\n" {
		t.Fatalf("create of a name whose snapshots remain: exit %d, %q", r.Code, r.Stderr)
	}
	if n := len(storeObjects(sheeps, "80")); n != 9*2 {
		t.Fatalf("%d inode copies while snapshots remain, want 18", n)
	}
	for i := 1; i <= 8; i++ {
		s.must(t, nil, "vdi", "delete", "test", "-s", strconv.Itoa(i))
	}
	if rows := vdiVids(t, s); len(rows) != 0 {
		t.Fatalf("vdi list after every member was deleted: %v", rows)
	}
	if left := storeObjects(sheeps, "80"); len(left) != 0 {
		t.Fatalf("inodes left after the family was deleted: %v", left)
	}
	if left := storeObjects(sheeps, "00"); len(left) != 0 {
		t.Fatalf("data objects left after the family was deleted: %v", left)
	}

	// The vids are free again: new VDIs take them from 1, on any node.
	s.must(t, nil, "vdi", "create", "test", "16M")
	sheeps[1].must(t, nil, "vdi", "create", "other", "16M")
	got = vdiVids(t, sheeps[1])
	if got["test 0"] != "1" || got["other 0"] != "2" {
		t.Fatalf("new VDIs got vids %v, want test 1 and other 2", got)
	}
	if out := s.must(t, nil, "vdi", "read", "test", "0", "5"); out != "\x00\x00\x00\x00\x00" {
		t.Fatalf("a VDI on a recycled vid reads %q, want zeros", out)
	}
}

// With -R a working VDI may get a lower vid than its snapshots (a freed
// vid below them): it is still found by name, and snapshots go on.
func TestRecycleVidWorkingBelowSnapshot(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-R", "--copies=1")
	s.must(t, nil, "vdi", "create", "x", "4M")          // vid 1
	s.must(t, nil, "vdi", "create", "y", "4M")          // vid 2
	s.must(t, nil, "vdi", "snapshot", "y")              // y: snapshot 2, working 3
	s.must(t, nil, "vdi", "delete", "x")                // vid 1 freed
	s.must(t, nil, "vdi", "snapshot", "-s", "two", "y") // y: snapshot 3, working 1
	got := vdiVids(t, s)
	if got["y 0"] != "1" || got["y 1"] != "2" || got["y 2"] != "3" {
		t.Fatalf("vids %v, want working y on 1 below its snapshots 2 and 3", got)
	}
	s.must(t, []byte("abc"), "vdi", "write", "y", "0", "3")
	if out := s.must(t, nil, "vdi", "read", "y", "0", "3"); out != "abc" {
		t.Fatalf("working VDI reads %q", out)
	}
	s.must(t, nil, "vdi", "snapshot", "y")
	if got := vdiVids(t, s); got["y 3"] != "1" || got["y 0"] != "4" {
		t.Fatalf("after a third snapshot: %v", got)
	}
}
