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
	parallel(t)
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
	parallel(t)
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

// TestClusterVidRace: creates racing through different nodes never share
// a vid or a name. Each round races two names with the same hash (their
// probes meet on the same slots) and one of them a second time, through a
// third node: exactly one create of that name succeeds, the other gets
// dog's "VDI exists already" (exit 1, as dog's do_vdi_create), and every
// VDI reads back what its creator wrote. The names are deleted between
// rounds, so later rounds probe past deleted slots too.
func TestClusterVidRace(t *testing.T) {
	parallel(t)
	a, b := collidingNames(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	for round := 0; round < 4; round++ {
		twice, once := a, b
		if round%2 == 1 {
			twice, once = b, a
		}
		type attempt struct {
			name string
			node int
			r    Result
		}
		attempts := []*attempt{{name: twice, node: round % 3}, {name: once, node: (round + 1) % 3}, {name: twice, node: (round + 2) % 3}}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, at := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				at.r = sheeps[at.node].collie(t, nil, "vdi", "create", at.name, "8M")
			}()
		}
		close(start)
		wg.Wait()

		if r := attempts[1].r; r.Code != 0 {
			t.Fatalf("round %d: create %s through node %d: exit %d: %s", round, once, attempts[1].node, r.Code, r.Stderr)
		}
		first, second := attempts[0], attempts[2]
		if (first.r.Code == 0) == (second.r.Code == 0) {
			t.Fatalf("round %d: racing creates of %s through nodes %d and %d: exit %d and %d, want exactly one success\n%s%s",
				round, twice, first.node, second.node, first.r.Code, second.r.Code, first.r.Stderr, second.r.Stderr)
		}
		winner, loser := first, second
		if second.r.Code == 0 {
			winner, loser = second, first
		}
		if want := "Failed to create VDI " + twice + ": VDI exists already\n"; loser.r.Code != 1 || loser.r.Stderr != want {
			t.Fatalf("round %d: losing create of %s: exit %d, stderr %q; want exit 1, %q", round, twice, loser.r.Code, loser.r.Stderr, want)
		}

		data := map[string][]byte{}
		for _, at := range []*attempt{winner, attempts[1]} {
			data[at.name] = make([]byte, 1<<20)
			rand.Read(data[at.name])
			sheeps[at.node].must(t, data[at.name], "vdi", "write", at.name, "0", strconv.Itoa(1<<20))
		}
		raw := sheeps[(round+1)%3].must(t, nil, "vdi", "list", "-r")
		vids, names := map[string]string{}, map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				t.Fatalf("bad row %q", line)
			}
			if other, dup := vids[f[7]]; dup {
				t.Fatalf("round %d: %s and %s share vid %s", round, other, f[1], f[7])
			}
			if names[f[1]] {
				t.Fatalf("round %d: two VDIs named %s:\n%s", round, f[1], raw)
			}
			vids[f[7]], names[f[1]] = f[1], true
		}
		if len(vids) != 2 || !names[a] || !names[b] {
			t.Fatalf("round %d: want VDIs %s and %s, got:\n%s", round, a, b, raw)
		}
		for name, d := range data {
			for _, s := range sheeps {
				mustRead(t, s, name, d, fmt.Sprintf("in round %d", round))
			}
		}
		sheeps[0].must(t, nil, "vdi", "delete", a)
		sheeps[0].must(t, nil, "vdi", "delete", b)
	}
}

// TestClusterZones: with two nodes sharing a zone, no object has two copies
// in that zone.
func TestClusterZones(t *testing.T) {
	parallel(t)
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
