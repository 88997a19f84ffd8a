package tests

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Store checksums end to end (docs/design.md §8 "Local store"): a byte flipped in
// one stored copy, behind the sheep's back, is never served; a read or
// `collie vdi check` finds it and repairs the copy from a good one.

// dataObject is the path of data object idx of the only VDI, in s's store.
func dataObject(t *testing.T, s *Sheep, idx int) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "00*"))
	slices.Sort(files)
	if idx >= len(files) {
		t.Fatalf("%s holds %d data objects, want more than %d", s.Addr(), len(files), idx)
	}
	return files[idx]
}

// fileByte reads the byte at off of a stored object file.
func fileByte(t *testing.T, path string, off int64) byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// flip changes the byte at off of a stored object file as a failing disk
// would: data only, the checksum xattr untouched.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{fileByte(t, path, off) ^ 0xff}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestChecksumRepair(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "16M")
	data := make([]byte, 8<<20)
	rand.Read(data)
	size := strconv.Itoa(len(data))
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", size)
	const off = 3*4096 + 7 // in data object 0
	readBack := func(s *Sheep) {
		t.Helper()
		if got := s.must(t, nil, "vdi", "read", "Alice", "0", size); got != string(data) {
			t.Fatalf("read through %s differs from what was written", s.Addr())
		}
	}
	repaired := func(s *Sheep) {
		t.Helper()
		if b := fileByte(t, dataObject(t, s, 0), off); b != data[off] {
			t.Fatalf("copy on %s not repaired: byte %#x, want %#x", s.Addr(), b, data[off])
		}
	}

	t.Run("read repairs the local copy", func(t *testing.T) {
		flip(t, dataObject(t, sheeps[1], 0), off)
		readBack(sheeps[1])
		repaired(sheeps[1])
	})

	t.Run("vdi check repairs a copy", func(t *testing.T) {
		path := dataObject(t, sheeps[2], 0)
		flip(t, path, off)
		out := sheeps[0].must(t, nil, "vdi", "check", "Alice")
		oid := filepath.Base(path)
		if !strings.Contains(out, "fixed replica "+oid+"\n") || !strings.HasSuffix(out, "finish check&repair Alice\n") {
			t.Fatalf("vdi check printed:\n%s", out)
		}
		repaired(sheeps[2])
		// Nothing left to fix.
		if out := sheeps[0].must(t, nil, "vdi", "check", "Alice"); out != "finish check&repair Alice\n" {
			t.Fatalf("second vdi check printed:\n%s", out)
		}
		if out := sheeps[1].must(t, nil, "vdi", "check", "-e", "Alice"); out != "Alice is fine, no object is missing.\n" {
			t.Fatalf("vdi check -e printed:\n%s", out)
		}
	})

	t.Run("two bad copies of three", func(t *testing.T) {
		// The gateway's own copy and a peer's are bad: the read fails over
		// to the good one and repairs its own; cluster check repairs the
		// rest.
		flip(t, dataObject(t, sheeps[0], 0), off)
		flip(t, dataObject(t, sheeps[1], 0), off+1)
		readBack(sheeps[0])
		repaired(sheeps[0])
		out := sheeps[2].must(t, nil, "cluster", "check")
		if !strings.HasPrefix(out, "fix vdi Alice\n") || !strings.HasSuffix(out, "finish check&repair Alice\n") {
			t.Fatalf("cluster check printed:\n%s", out)
		}
		if b := fileByte(t, dataObject(t, sheeps[1], 0), off+1); b != data[off+1] {
			t.Fatalf("copy on %s not repaired", sheeps[1].Addr())
		}
		for _, s := range sheeps {
			readBack(s)
		}
	})

	t.Run("a write into a bad chunk", func(t *testing.T) {
		// A partial write into a bad chunk repairs the copy first, then
		// writes: both the new bytes and the old ones around them survive.
		flip(t, dataObject(t, sheeps[1], 0), off)
		patch := []byte("patched")
		sheeps[1].must(t, patch, "vdi", "write", "Alice", strconv.Itoa(off+100), strconv.Itoa(len(patch)))
		copy(data[off+100:], patch)
		repaired(sheeps[1])
		for _, s := range sheeps {
			readBack(s)
		}
	})
}

// With a single copy there is nothing to repair from: the read fails with
// an I/O error instead of returning the bad byte.
func TestChecksumSingleCopy(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "--copies=1")
	s.must(t, nil, "vdi", "create", "Alice", "8M")
	data := make([]byte, 4<<20)
	rand.Read(data)
	s.must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	const off = 1<<20 + 5
	flip(t, dataObject(t, s, 0), off)

	r := s.collie(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(len(data)))
	if r.Code == 0 {
		t.Fatal("read of a bad single copy succeeded")
	}
	if len(r.Stdout) > off && r.Stdout[off] != data[off] {
		t.Fatal("the bad byte reached the client")
	}
	if !strings.Contains(r.Stderr, "I/O error") {
		t.Fatalf("read failed with %q, want an I/O error", r.Stderr)
	}
	// A read of other bytes of the object still works.
	if got := s.must(t, nil, "vdi", "read", "Alice", "0", "4096"); !bytes.Equal([]byte(got), data[:4096]) {
		t.Fatal("good bytes of the object read wrong")
	}
	// vdi check finds the copy bad and has no good one to repair it from.
	r = s.collie(t, nil, "vdi", "check", "Alice")
	if r.Code != 1 || !strings.Contains(r.Stderr, "no good copy of ") || !strings.HasSuffix(r.Stdout, "finish check&repair Alice\n") {
		t.Fatalf("vdi check: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
}

// Recovery skips a holder whose copy fails its checksums, pulls the object
// from a good one, and has the bad one repaired.
func TestChecksumRepairDuringRecovery(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "4M")
	data := make([]byte, 4<<20)
	rand.Read(data)
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	var holders []*Sheep
	var newcomer *Sheep
	for _, s := range sheeps {
		if files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "00*")); len(files) == 1 {
			holders = append(holders, s)
		} else {
			newcomer = s
		}
	}
	if len(holders) != 3 || newcomer == nil {
		t.Fatalf("%d holders of the data object, want 3 of 4 nodes", len(holders))
	}
	// Recovery asks the holders in node order (address, then port): make
	// the first one it will ask the bad one, and kill the last.
	slices.SortFunc(holders, func(a, b *Sheep) int { return a.Port - b.Port })
	const off = 2<<20 + 9
	name := filepath.Base(dataObject(t, holders[0], 0))
	flip(t, dataObject(t, holders[0], 0), off)
	holders[2].Kill()
	live := []*Sheep{holders[0], holders[1], newcomer}
	waitRecovered(t, live, name, 3)
	for _, s := range live {
		if b := fileByte(t, dataObject(t, s, 0), off); b != data[off] {
			t.Fatalf("copy on %s: byte %#x, want %#x", s.Addr(), b, data[off])
		}
		if got := s.must(t, nil, "vdi", "read", "Alice"); got != string(data) {
			t.Fatalf("read through %s differs", s.Addr())
		}
	}
}
