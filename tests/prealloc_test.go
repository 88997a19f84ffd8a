package tests

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nodeUsed is the Used column of each node of `node info -r`, in bytes.
func nodeUsed(t *testing.T, s *Sheep) []uint64 {
	t.Helper()
	var used []uint64
	for _, l := range strings.Split(strings.TrimSpace(s.must(t, nil, "node", "info", "-r")), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[0] == "Total" {
			continue
		}
		u, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("node info line %q: %v", l, err)
		}
		used = append(used, u)
	}
	return used
}

// TestPreallocatedVdiIsUsed: `vdi create -P` allocates every data object
// of the VDI on each of its copies, as Sheepdog's store allocates every
// data object it creates (dog writes nothing into them): node info's Used
// grows by copies x size at once (Sheepdog's test 113 reads it), and the
// VDI reads as zeros. A VDI created without -P takes nothing.
func TestPreallocatedVdiIsUsed(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	s := sheeps[0]
	s.must(t, nil, "cluster", "format", "--copies=2")
	sum := func(u []uint64) (n uint64) {
		for _, x := range u {
			n += x
		}
		return n
	}
	const size = 32 << 20
	before := sum(nodeUsed(t, s))
	s.must(t, nil, "vdi", "create", "thin", strconv.Itoa(size))
	if grew := sum(nodeUsed(t, s)) - before; grew > 1<<20 {
		t.Errorf("a VDI created without -P took %d bytes", grew)
	}
	before = sum(nodeUsed(t, s))
	s.must(t, nil, "vdi", "create", "-P", "thick", strconv.Itoa(size))
	after := nodeUsed(t, s)
	if grew := sum(after) - before; grew < 2*size || grew > 2*size+1<<20 {
		t.Errorf("vdi create -P of %d bytes with 2 copies: Used grew by %d (per node now %v), want %d", size, grew, after, 2*size)
	}
	if got := s.must(t, nil, "vdi", "read", "thick"); !bytes.Equal([]byte(got), make([]byte, size)) {
		t.Error("the preallocated VDI does not read as zeros")
	}

	// A node replaces the second: recovery copies every object to it,
	// data objects whole and the inodes (12 MiB each, nearly all zeros)
	// sparse, as Sheepdog's store keeps them: Used ends where it was.
	want := sum(after)
	c := startSheep(t, "-z", "2", "--join", s.Addr())
	waitNodes(t, c, 3)
	sheeps[1].Kill()
	waitNodes(t, s, 2)
	deadline := time.Now().Add(60 * time.Second)
	for {
		used := nodeUsed(t, s)
		idle := strings.Count(s.must(t, nil, "node", "recovery"), "\n") <= 2
		if idle && len(used) == 2 && sum(used) >= want && sum(used) <= want+1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after recovery onto a new node, Used is %v (total %d), want a total of %d", used, sum(used), want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got := c.must(t, nil, "vdi", "read", "thick"); !bytes.Equal([]byte(got), make([]byte, size)) {
		t.Error("the preallocated VDI does not read as zeros through the new node")
	}
}
