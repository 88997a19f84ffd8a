package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Snapshots, clones, rollback, attributes and the views of a VDI family,
// driven through the collie binary against real sheep (issue 5).

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// rawList is "vdi list -r" with each row's creation time replaced by "T".
func rawList(t *testing.T, s *Sheep) string {
	t.Helper()
	out := s.must(t, nil, "vdi", "list", "-r")
	ctime := regexp.MustCompile(`(?m)^(\S \S+ \d+ \d+ \d+ \d+) \d+ `)
	return ctime.ReplaceAllString(out, "$1 T ")
}

// readVdi reads n bytes at 0 of a VDI or snapshot (extra: e.g. "-s", "1").
func readVdi(t *testing.T, s *Sheep, name string, n int, extra ...string) []byte {
	t.Helper()
	args := append([]string{"vdi", "read", name, "0", strconv.Itoa(n)}, extra...)
	return []byte(s.must(t, nil, args...))
}

// dataObjects counts the data object files of vid in the store dirs
// (names "00<vid>" + index; inode objects start with 80).
func dataObjects(sheeps []*Sheep, vid uint32) int {
	n := 0
	for _, s := range sheeps {
		files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", fmt.Sprintf("00%06x*", vid)))
		n += len(files)
	}
	return n
}

// waitObjects waits (reclamation may lag behind the reply) until vid has
// want data object files in the store dirs.
func waitObjects(t *testing.T, sheeps []*Sheep, vid uint32, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := dataObjects(sheeps, vid)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vid %x has %d data object files, want %d", vid, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dial connects a protocol client to s, closed at cleanup.
func dial(t *testing.T, s *Sheep) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSnapshotSeedFlow is the seed's flow: create Alice, write, snapshot,
// clone Charlie from Alice:1, then check the rows, the data of every
// member after writes, read-only snapshots, rollback, tree and delete.
func TestSnapshotSeedFlow(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "Alice", "64M")
	orig := randomBytes(8 << 20)
	s.must(t, orig, "vdi", "write", "Alice", "0", strconv.Itoa(len(orig)))

	s.must(t, nil, "vdi", "snapshot", "-s", "s1", "Alice")
	s.must(t, nil, "vdi", "clone", "-s", "s1", "Alice", "Charlie")
	// The snapshot keeps Alice's vid; the working VDI takes the next slot.
	want := "s Alice 1 67108864 8388608 0 T 15d167 1 s1 22\n" +
		"= Alice 0 67108864 0 8388608 T 15d168 1  22\n" +
		"c Charlie 0 67108864 0 8388608 T 3ca881 1  22\n"
	if got := rawList(t, s); got != want {
		t.Fatalf("vdi list -r after snapshot and clone:\n%s\nwant\n%s", got, want)
	}
	list := s.must(t, nil, "vdi", "list")
	for _, row := range []string{
		`s Alice        1   64 MB  8\.0 MB  0\.0 MB \d{4}-\d\d-\d\d \d\d:\d\d   15d167      1            s1  22`,
		`  Alice        0   64 MB  0\.0 MB  8\.0 MB \d{4}-\d\d-\d\d \d\d:\d\d   15d168      1                22`,
		`c Charlie      0   64 MB  0\.0 MB  8\.0 MB \d{4}-\d\d-\d\d \d\d:\d\d   3ca881      1                22`,
	} {
		if !regexp.MustCompile(`(?m)^` + row + `$`).MatchString(list) {
			t.Errorf("vdi list lacks %q:\n%s", row, list)
		}
	}
	tree := regexp.MustCompile(`^Alice---\[\d{4}-\d\d-\d\d \d\d:\d\d\]---\(you are here\)\nCharlie---\(you are here\)\n$`)
	if got := s.must(t, nil, "vdi", "tree"); !tree.MatchString(got) {
		t.Errorf("vdi tree:\n%s", got)
	}

	// Writes to the working VDI and to the clone never reach the snapshot.
	newer := randomBytes(4 << 20)
	s.must(t, newer, "vdi", "write", "Alice", "0", strconv.Itoa(len(newer)))
	patch := bytes.Repeat([]byte{0xC5}, 4096)
	s.must(t, patch, "vdi", "write", "Charlie", "100", "4096")
	for _, snap := range []string{"1", "s1"} {
		if got := readVdi(t, s, "Alice", len(orig), "-s", snap); !bytes.Equal(got, orig) {
			t.Fatalf("snapshot Alice:%s changed after writes to Alice and Charlie", snap)
		}
	}
	wantAlice := append(bytes.Clone(newer), orig[4<<20:]...)
	if got := readVdi(t, s, "Alice", len(orig)); !bytes.Equal(got, wantAlice) {
		t.Fatal("Alice does not read back what was written over the snapshot's data")
	}
	// The clone reads the snapshot's data; the partial write kept the rest
	// of its object (copy-on-write).
	wantCharlie := bytes.Clone(orig)
	copy(wantCharlie[100:], patch)
	if got := readVdi(t, s, "Charlie", len(orig)); !bytes.Equal(got, wantCharlie) {
		t.Fatal("Charlie does not read the snapshot's data around its own write")
	}
	want = "s Alice 1 67108864 8388608 0 T 15d167 1 s1 22\n" +
		"= Alice 0 67108864 4194304 4194304 T 15d168 1  22\n" +
		"c Charlie 0 67108864 4194304 4194304 T 3ca881 1  22\n"
	if got := rawList(t, s); got != want {
		t.Fatalf("vdi list -r after writes:\n%s\nwant\n%s", got, want)
	}

	// A snapshot cannot be written: collie has no -s for write, and the
	// sheep refuses writes to the snapshot's data objects.
	if r := s.collie(t, patch, "vdi", "write", "-s", "1", "Alice", "0", "4096"); r.Code != 64 {
		t.Errorf("vdi write -s: exit %d, want 64\n%s", r.Code, r.Stderr)
	}
	objs := client.Objects{C: dial(t, s)}
	snapObj := proto.VidToDataOid(0x15d167, 0)
	if err := objs.WriteObject(context.Background(), snapObj, 0, patch, 0); !errors.Is(err, proto.ResReadonly) {
		t.Errorf("WRITE_OBJ to a snapshot's object: %v, want %v", err, proto.ResReadonly)
	}
	if err := objs.CreateAndWrite(context.Background(), snapObj, 0, 0, patch, 0); !errors.Is(err, proto.ResReadonly) {
		t.Errorf("CREATE_AND_WRITE_OBJ of a snapshot's object: %v, want %v", err, proto.ResReadonly)
	}
	if got := readVdi(t, s, "Alice", len(orig), "-s", "1"); !bytes.Equal(got, orig) {
		t.Fatal("refused writes changed the snapshot")
	}

	// Rollback asks first; "no" changes nothing.
	r := s.collie(t, []byte("no\n"), "vdi", "rollback", "-s", "s1", "Alice")
	if r.Code != 0 || r.Stdout != "This operation discards any changes made since the previous\nsnapshot was taken.  Continue? [yes/no]: " {
		t.Fatalf("rollback answered no: %+v", r)
	}
	if got := readVdi(t, s, "Alice", len(orig)); !bytes.Equal(got, wantAlice) {
		t.Fatal("a refused rollback changed Alice")
	}
	s.must(t, []byte("yes\n"), "vdi", "rollback", "-s", "1", "Alice")
	if got := readVdi(t, s, "Alice", len(orig)); !bytes.Equal(got, orig) {
		t.Fatal("rollback did not restore the snapshot's data")
	}
	waitObjects(t, []*Sheep{s}, 0x15d168, 0) // the discarded state's own object
	s.must(t, nil, "vdi", "delete", "Charlie")
	waitObjects(t, []*Sheep{s}, 0x3ca881, 0)
	want = "s Alice 1 67108864 8388608 0 T 15d167 1 s1 22\n" +
		"= Alice 0 67108864 0 8388608 T 15d169 1  22\n"
	if got := rawList(t, s); got != want {
		t.Fatalf("vdi list -r after rollback and delete:\n%s\nwant\n%s", got, want)
	}
	tree = regexp.MustCompile(`^Alice---\[\d{4}-\d\d-\d\d \d\d:\d\d\]---\(you are here\)\n$`)
	if got := s.must(t, nil, "vdi", "tree"); !tree.MatchString(got) {
		t.Errorf("vdi tree after rollback:\n%s", got)
	}

	// Object views of the rolled-back VDI (dog-session.txt's formats).
	loc := s.must(t, nil, "vdi", "object", "location", "Alice", "-i", "0")
	wantLoc := fmt.Sprintf("Looking for the object 0015d16700000000 (vid 0x15d169 idx 0, 1 copies) with 1 nodes\n\n"+
		"%s has the object\n\nAccording to sheepdog algorithm, the object should be located at:\n%s\n", s.Addr(), s.Addr())
	if loc != wantLoc {
		t.Errorf("object location:\n%q\nwant\n%q", loc, wantLoc)
	}
	if got := s.must(t, nil, "vdi", "object", "map", "Alice"); got != "Index       VID\n00000000   15d167\n00000001   15d167\n" {
		t.Errorf("object map:\n%q", got)
	}
	graph := s.must(t, nil, "vdi", "graph")
	if !strings.HasPrefix(graph, "digraph G {\n") || !strings.Contains(graph, "  \"15d167\" -> \"15d169\";\n") ||
		!strings.HasSuffix(graph, "}\n") {
		t.Errorf("vdi graph:\n%s", graph)
	}

	// Resize grows the working VDI; shrinking is refused.
	s.must(t, nil, "vdi", "resize", "Alice", "128M")
	if !strings.Contains(rawList(t, s), "= Alice 0 134217728 ") {
		t.Errorf("after resize:\n%s", rawList(t, s))
	}
	if r := s.collie(t, nil, "vdi", "resize", "Alice", "64M"); r.Code != 64 || !strings.Contains(r.Stderr, "Shrinking VDIs is not implemented") {
		t.Errorf("shrink: %+v", r)
	}
	tail := s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(120<<20), "4096")
	if tail != string(make([]byte, 4096)) {
		t.Error("the grown part does not read as zeros")
	}
}

// TestSnapshotDeleteSnapshot: deleting a snapshot by id removes its row and
// leaves the working VDI's data intact; snapshots are found by tag and id.
func TestSnapshotDeleteSnapshot(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "disk", "16M")
	v1 := randomBytes(8 << 20)
	s.must(t, v1, "vdi", "write", "disk", "0", strconv.Itoa(len(v1)))
	s.must(t, nil, "vdi", "snapshot", "-s", "first", "disk")
	v2 := randomBytes(4 << 20)
	s.must(t, v2, "vdi", "write", "disk", "0", strconv.Itoa(len(v2)))
	s.must(t, nil, "vdi", "snapshot", "disk")
	if r := s.collie(t, nil, "vdi", "snapshot", "-s", "first", "disk"); r.Code == 0 {
		t.Error("a second snapshot with a used tag was accepted")
	}
	if got := readVdi(t, s, "disk", 4<<20, "-s", "2"); !bytes.Equal(got, v2) {
		t.Fatal("snapshot 2 does not hold the second write")
	}
	s.must(t, nil, "vdi", "delete", "-s", "first", "disk")
	if list := s.must(t, nil, "vdi", "list", "-r"); strings.Contains(list, "first") || strings.Count(list, "\n") != 2 {
		t.Fatalf("after deleting snapshot 1:\n%s", list)
	}
	if r := s.collie(t, nil, "vdi", "read", "-s", "1", "disk", "0", "512"); r.Code != 1 ||
		!strings.Contains(r.Stderr, "Failed to open VDI disk (snapshot id: 1 snapshot tag: ): Failed to find requested tag") {
		t.Errorf("read of the deleted snapshot: %+v", r)
	}
	want := append(bytes.Clone(v2), v1[4<<20:]...)
	if got := readVdi(t, s, "disk", len(v1)); !bytes.Equal(got, want) {
		t.Fatal("deleting a snapshot changed the working VDI")
	}
	if got := readVdi(t, s, "disk", len(v1), "-s", "2"); !bytes.Equal(got, want) {
		t.Fatal("deleting snapshot 1 changed snapshot 2")
	}
}

// TestAttrCommands: setattr/getattr through collie, values from the
// command line and from stdin, exclusive create and delete.
func TestAttrCommands(t *testing.T) {
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "Alice", "8M")
	s.must(t, nil, "vdi", "setattr", "Alice", "owner", "alice")
	if got := s.must(t, nil, "vdi", "getattr", "Alice", "owner"); got != "alice" {
		t.Fatalf("getattr: %q", got)
	}
	s.must(t, []byte("from stdin\n"), "vdi", "setattr", "Alice", "note")
	if got := s.must(t, nil, "vdi", "getattr", "Alice", "note"); got != "from stdin\n" {
		t.Fatalf("getattr of a value read from stdin: %q", got)
	}
	r := s.collie(t, nil, "vdi", "setattr", "-x", "Alice", "owner", "bob")
	if r.Code != 3 || r.Stderr != "The attribute 'owner' already exists\n" {
		t.Errorf("exclusive setattr of an existing key: %+v", r)
	}
	// Attributes belong to the name, not to the vid: a snapshot keeps them.
	s.must(t, nil, "vdi", "snapshot", "Alice")
	s.must(t, nil, "vdi", "setattr", "Alice", "owner", "carol")
	if got := s.must(t, nil, "vdi", "getattr", "Alice", "owner"); got != "carol" {
		t.Fatalf("getattr after snapshot and overwrite: %q", got)
	}
	s.must(t, nil, "vdi", "setattr", "-d", "Alice", "owner")
	r = s.collie(t, nil, "vdi", "getattr", "Alice", "owner")
	if r.Code != 5 || r.Stderr != "Attribute 'owner' not found\n" {
		t.Errorf("getattr of a deleted key: %+v", r)
	}
	r = s.collie(t, nil, "vdi", "getattr", "Nobody", "owner")
	if r.Code != 5 || r.Stderr != "VDI not found\n" {
		t.Errorf("getattr of an unknown VDI: %+v", r)
	}
	if got := s.must(t, nil, "vdi", "getattr", "Alice", "note"); got != "from stdin\n" {
		t.Fatalf("the other key was disturbed: %q", got)
	}
}
