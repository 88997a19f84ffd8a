package tests

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitRecovered waits until no live sheep reports recovery in progress,
// twice in a row, and every data object of prefix has want copies.
func waitRecovered(t *testing.T, live []*Sheep, prefix string, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	quiet := 0
	for {
		busy := false
		for _, s := range live {
			r := s.collie(t, nil, "node", "recovery")
			if r.Code != 0 || strings.Count(r.Stdout, "\n") > 2 {
				busy = true
			}
		}
		copies := objectCopies(t, live, prefix)
		allOK := len(copies) > 0
		for _, c := range copies {
			if c != want {
				allOK = false
			}
		}
		if !busy && allOK {
			quiet++
			if quiet == 2 {
				return
			}
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovery did not finish: busy=%v copies=%v", busy, copies)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestRecoveryTwoFailures: 4 nodes, copies=2, 64 MiB written; one node is
// killed, recovery restores two copies, a second node is killed, and every
// byte still reads back.
func TestRecoveryTwoFailures(t *testing.T) {
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "Alice", 64<<20)

	start := time.Now()
	sheeps[3].Kill()
	live := sheeps[:3]
	waitNodes(t, sheeps[0], 3)
	waitRecovered(t, live, "0015d167", 2)
	t.Logf("recovered to 2 copies on 3 nodes in %v", time.Since(start).Round(time.Millisecond))

	sheeps[2].Kill()
	live = sheeps[:2]
	waitNodes(t, sheeps[0], 2)
	for _, s := range live {
		mustRead(t, s, "Alice", data, "after two failures")
	}
}

// TestRecoveryWriterDuringFailure: a writer keeps writing while a node is
// killed; every acknowledged write reads back afterwards.
func TestRecoveryWriterDuringFailure(t *testing.T) {
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "64M")
	want := make([]byte, 64<<20)
	done := make(chan struct{})
	acked := make(chan int, 1000)
	go func() {
		defer close(done)
		for i := 0; i < 40; i++ {
			chunk := bytes.Repeat([]byte{byte(i + 1)}, 1<<20)
			off := (i * 5 % 64) << 20
			r := sheeps[1].collie(t, chunk, "vdi", "write", "Alice", strconv.Itoa(off), strconv.Itoa(len(chunk)))
			if r.Code == 0 {
				copy(want[off:], chunk)
				acked <- i
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	sheeps[3].Kill()
	<-done
	if n := len(acked); n < 35 {
		t.Fatalf("only %d of 40 writes acknowledged during one node failure", n)
	}
	got := sheeps[2].must(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(len(want)))
	if !bytes.Equal([]byte(got), want) {
		t.Fatal("acknowledged writes do not read back")
	}
}

// TestRecoveryWholeClusterRestart: every node killed and restarted; the
// cluster comes back with the same VDIs and data.
func TestRecoveryWholeClusterRestart(t *testing.T) {
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "Alice", 32<<20)
	for _, s := range sheeps {
		s.Kill()
	}
	for i, s := range sheeps {
		s.start("-z", strconv.Itoa(i))
	}
	for _, s := range sheeps {
		waitRunning(t, s)
	}
	if list := sheeps[2].must(t, nil, "vdi", "list", "-r"); !strings.HasPrefix(list, "= Alice 0 33554432 ") {
		t.Fatalf("vdi list after restart: %q", list)
	}
	mustRead(t, sheeps[1], "Alice", data, "after a whole-cluster restart")
}

// TestRecoveryLeftoverNotServed: a copy left behind on a node that stopped
// being a target missed the writes since; when that node becomes a target
// again it must recover the object, not serve its old copy. Recovery is
// disabled while the leftovers form, so cleanup cannot drop them first.
func TestRecoveryLeftoverNotServed(t *testing.T) {
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	const prefix = "0015d167"
	old := seedVdi(t, sheeps[0], "Alice", 64<<20)
	sheeps[0].must(t, nil, "cluster", "recover", "disable")

	// A fourth node joins (epoch 2): objects it is now a target of get
	// their copy there when written (a missing copy is repaired on write);
	// the node whose place it took keeps an old copy.
	newcomer := startSheep(t, "-z", "3", "--join", sheeps[1].Addr())
	all := append(append([]*Sheep{}, sheeps...), newcomer)
	waitNodes(t, sheeps[0], 4)
	waitRunning(t, newcomer)
	data := bytes.Repeat([]byte{0x5e}, len(old))
	for i := range data {
		data[i] ^= byte(i / 4099)
	}
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	leftovers := 0
	for _, c := range objectCopies(t, all, prefix) {
		if c > 2 {
			leftovers++
		}
	}
	if leftovers == 0 {
		t.Fatal("no object has a leftover copy: the test proves nothing")
	}

	// It leaves again (epoch 3 = epoch 1's nodes): the leftovers' nodes
	// are the targets once more.
	newcomer.Kill()
	waitNodes(t, sheeps[0], 3)
	sheeps[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, sheeps, prefix, 2)
	for i, s := range sheeps {
		mustRead(t, s, "Alice", data, "through node "+strconv.Itoa(i)+" after the leftovers' nodes became targets again")
	}
}
