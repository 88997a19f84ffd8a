package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startCluster starts n sheeps on loopback, each in its own zone, all
// joining the first, and waits until every one lists n nodes.
func startCluster(t *testing.T, n int) []*Sheep {
	t.Helper()
	return startClusterTB(t, n)
}

// waitNodes waits until s's node list has n rows.
func waitNodes(t *testing.T, s *Sheep, n int) {
	t.Helper()
	waitNodesTB(t, s, n)
}

func waitNodesTB(t testing.TB, s *Sheep, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := s.collie(t, nil, "node", "list", "-r")
		if r.Code == 0 && strings.Count(r.Stdout, "\n") == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %q, want %d nodes", s.Addr(), r.Stdout, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// objectCopies counts the store dirs holding each object file.
func objectCopies(t *testing.T, sheeps []*Sheep, prefix string) map[string]int {
	t.Helper()
	count := map[string]int{}
	for _, s := range sheeps {
		files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", prefix+"*"))
		for _, f := range files {
			count[filepath.Base(f)]++
		}
	}
	return count
}

func TestClusterReplication(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			sheeps := startCluster(t, n)
			// Format from a node other than the first.
			sheeps[1].must(t, nil, "cluster", "format", "--copies=3")
			sheeps[1].must(t, nil, "vdi", "create", "Alice", "64M")
			data := make([]byte, 20<<20)
			rand.Read(data)
			sheeps[1].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
			for _, i := range []int{0, 2} {
				got := sheeps[i].must(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(len(data)))
				if !bytes.Equal([]byte(got), data) {
					t.Fatalf("read through node %d differs", i)
				}
			}
			copies := objectCopies(t, sheeps, "0015d167")
			if len(copies) != 5 {
				t.Fatalf("want 5 data objects, found %v", copies)
			}
			for obj, c := range copies {
				if c != 3 {
					t.Errorf("object %s has %d copies, want 3", obj, c)
				}
			}
			if nodes := sheeps[0].must(t, nil, "node", "list"); strings.Count(nodes, "\n") != n+1 {
				t.Fatalf("node list:\n%s", nodes)
			}
		})
	}
}

func TestClusterNodeFailure(t *testing.T) {
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	data := seedVdi(t, sheeps[0], "Alice", 16<<20)
	before := sheeps[0].must(t, nil, "cluster", "info")

	sheeps[3].Kill()
	// Reads and writes keep working through the others.
	patch := bytes.Repeat([]byte{7}, 1<<20)
	sheeps[1].must(t, patch, "vdi", "write", "Alice", strconv.Itoa(3<<20), strconv.Itoa(len(patch)))
	copy(data[3<<20:], patch)
	for _, i := range []int{0, 1, 2} {
		got := sheeps[i].must(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(len(data)))
		if !bytes.Equal([]byte(got), data) {
			t.Fatalf("read through node %d after the kill differs", i)
		}
	}
	waitNodes(t, sheeps[0], 3)
	after := sheeps[0].must(t, nil, "cluster", "info")
	if strings.Count(after, "\n") <= strings.Count(before, "\n") {
		t.Fatalf("no new epoch after the kill:\nbefore\n%s\nafter\n%s", before, after)
	}
	// The node comes back with its dir and rejoins.
	sheeps[3].start("-z", "3")
	waitNodes(t, sheeps[0], 4)
	waitRunning(t, sheeps[3])
	got := sheeps[3].must(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(len(data)))
	if !bytes.Equal([]byte(got), data) {
		t.Fatal("read through the returned node differs")
	}
}

// TestClusterVidRace: two VDIs created at the same moment through two
// nodes never share a vid.
func TestClusterVidRace(t *testing.T) {
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sheeps[i].must(t, nil, "vdi", "create", fmt.Sprintf("race%d-%d", round, i), "8M")
			}()
		}
		wg.Wait()
	}
	raw := sheeps[2].must(t, nil, "vdi", "list", "-r")
	vids := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			t.Fatalf("bad row %q", line)
		}
		if other, dup := vids[f[7]]; dup {
			t.Fatalf("%s and %s share vid %s", other, f[1], f[7])
		}
		vids[f[7]] = f[1]
	}
	if len(vids) != 6 {
		t.Fatalf("want 6 VDIs, got %d:\n%s", len(vids), raw)
	}
}

// TestClusterZones: with two nodes sharing a zone, no object has two copies
// in that zone.
func TestClusterZones(t *testing.T) {
	zones := []string{"1", "1", "2", "3"}
	var sheeps []*Sheep
	for i, z := range zones {
		extra := []string{"-z", z}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, extra...))
	}
	waitNodes(t, sheeps[0], 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	sheeps[0].must(t, nil, "vdi", "create", "Zed", "128M")
	data := make([]byte, 64<<20)
	rand.Read(data)
	sheeps[0].must(t, data, "vdi", "write", "Zed", "0", strconv.Itoa(len(data)))
	a, _ := filepath.Glob(filepath.Join(sheeps[0].Dir, "obj", "00*"))
	b, _ := filepath.Glob(filepath.Join(sheeps[1].Dir, "obj", "00*"))
	inA := map[string]bool{}
	for _, f := range a {
		inA[filepath.Base(f)] = true
	}
	for _, f := range b {
		if inA[filepath.Base(f)] {
			t.Fatalf("object %s stored twice in zone 1", filepath.Base(f))
		}
	}
	if len(a)+len(b) != 16 {
		t.Fatalf("zone 1 holds %d+%d objects, want one copy of each of 16", len(a), len(b))
	}
}
