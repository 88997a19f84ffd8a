package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	parallel(t)
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

// TestRecoveryWriterDuringFailure: 4 nodes, copies=2; two writers keep
// writing through two nodes that stay up while a third is killed with -9,
// recovery restores two copies, and a fourth is killed too. Every write
// is retried until acknowledged (as a client would), so the final
// contents are known exactly: every acknowledged write reads back through
// both survivors. A failed attempt is counted: the gateway retries a
// request that meets a dead peer or an epoch change until the new epoch
// (withRetry, 30 s), so none may fail.
func TestRecoveryWriterDuringFailure(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	const prefix, size, half = "0015d167", 64 << 20, 32 << 20
	want := seedVdi(t, sheeps[0], "Alice", size)

	type writer struct {
		acked  atomic.Int32
		failed []string // when and why each failed attempt failed
	}
	writers := []*writer{{}, {}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, wr := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Writer w owns half w of the VDI; 1 MiB writes at 512 KiB
			// steps, so some straddle two objects.
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := w*half + (i*7%63)<<19
				chunk := make([]byte, 1<<20)
				rand.Read(chunk)
				for {
					r := sheeps[w].collie(t, chunk, "vdi", "write", "Alice", strconv.Itoa(off), strconv.Itoa(len(chunk)))
					if r.Code == 0 {
						break
					}
					wr.failed = append(wr.failed, fmt.Sprintf("%s: write at %d: exit %d: %s", time.Now().Format("15:04:05.000"), off, r.Code, strings.TrimSpace(r.Stderr)))
					time.Sleep(100 * time.Millisecond)
				}
				copy(want[off:], chunk)
				wr.acked.Add(1)
			}
		}()
	}
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer stopWriters()
	// progress waits until every writer has had n more writes acknowledged.
	progress := func(n int32, what string) {
		t.Helper()
		var base []int32
		for _, wr := range writers {
			base = append(base, wr.acked.Load())
		}
		deadline := time.Now().Add(30 * time.Second)
		for w, wr := range writers {
			for wr.acked.Load() < base[w]+n {
				if time.Now().After(deadline) {
					t.Fatalf("writer %d made no progress %s", w, what)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}

	progress(3, "before the failures")
	t.Logf("%s: kill -9 the first node", time.Now().Format("15:04:05.000"))
	sheeps[3].Kill()
	waitNodes(t, sheeps[0], 3)
	waitRecovered(t, sheeps[:3], prefix, 2)
	progress(3, "after the first failure")
	t.Logf("%s: kill -9 the second node", time.Now().Format("15:04:05.000"))
	sheeps[2].Kill()
	waitNodes(t, sheeps[0], 2)
	waitRecovered(t, sheeps[:2], prefix, 2)
	progress(3, "after the second failure")
	stopWriters()

	acked, failed := 0, 0
	for w, wr := range writers {
		acked += int(wr.acked.Load())
		failed += len(wr.failed)
		for _, f := range wr.failed {
			t.Logf("writer %d: %s", w, f)
		}
	}
	t.Logf("%d writes acknowledged, %d failed attempts", acked, failed)
	if failed > 0 {
		t.Errorf("%d write attempts failed across the two failures; want none", failed)
	}
	for _, s := range sheeps[:2] {
		mustRead(t, s, "Alice", want, "after two failures with writers running")
	}
}

// TestRecoveryWholeClusterRestart: every node killed and restarted; the
// cluster comes back with the same VDIs and data.
func TestRecoveryWholeClusterRestart(t *testing.T) {
	parallel(t)
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
	parallel(t)
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

// TestRecoveryReturningNodeServesNewData: a node stopped while the whole
// VDI is rewritten comes back holding an old copy of every object
// (3 nodes, copies=3); it must serve the new data from the moment it
// answers, never its old copies, and end up holding the new data. Until
// its first recovery run has moved the old copies aside, only the trust
// gate (recovery.Trusted) keeps them from being served: the reads start
// as soon as the node answers, small ones first so that several land in
// that window.
func TestRecoveryReturningNodeServesNewData(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	const prefix, size, objSize = "0015d167", 32 << 20, 4 << 20
	old := seedVdi(t, sheeps[0], "Alice", size)
	back := sheeps[2]

	back.Stop()
	waitNodes(t, sheeps[0], 2)
	data := make([]byte, size)
	rand.Read(data)
	sheeps[1].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(size))
	if stale := objectFiles(t, back, prefix); len(stale) != size/objSize || !bytes.Equal(stale[0], old[:objSize]) {
		t.Fatalf("the stopped node holds %d old objects, want all %d: the test proves nothing", len(stale), size/objSize)
	}

	back.start("-z", "2")
	// Every read that succeeds returns the new data; a read may fail only
	// while the node is still rejoining. First 4 KiB of each object in
	// turn, as fast as collie goes, then the whole VDI.
	served, overOld, failed, firstErr := 0, 0, 0, ""
	// Generous: each read is a collie process, slow on a loaded machine;
	// what is checked is what is served, not how fast.
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; served < 3*size/objSize; i++ {
		off := (i % (size / objSize)) * objSize
		hadOld := bytes.Equal(fileHead(back, prefix, off/objSize, 4096), old[off:off+4096])
		r := back.collie(t, nil, "vdi", "read", "Alice", strconv.Itoa(off), "4096")
		if r.Code != 0 {
			if failed++; failed == 1 {
				firstErr = strings.TrimSpace(r.Stderr)
			}
		}
		if r.Code == 0 {
			served++
			if hadOld {
				overOld++
			}
			if got := []byte(r.Stdout); !bytes.Equal(got, data[off:off+4096]) {
				t.Fatalf("the returning node served other data at %d (its old copy: %v)", off, bytes.Equal(got, old[off:off+4096]))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the returning node served %d reads in 90 s, refused %d (the first: %q); the last: %v", served, failed, firstErr, r)
		}
	}
	t.Logf("%d of the first %d reads served while the returning node held the old copy; %d refused while it rejoined (the first: %q)", overOld, served, failed, firstErr)
	mustRead(t, back, "Alice", data, "through the returning node as soon as it serves")
	waitRunning(t, back)
	waitNodes(t, sheeps[0], 3)
	mustRead(t, back, "Alice", data, "through the returning node once it runs")

	waitRecovered(t, sheeps, prefix, 3)
	mustRead(t, back, "Alice", data, "through the returning node after recovery")
	files := objectFiles(t, back, prefix)
	if len(files) != size/objSize {
		t.Fatalf("the returning node holds %d data objects, want %d", len(files), size/objSize)
	}
	for idx, b := range files {
		if !bytes.Equal(b, data[idx*objSize:(idx+1)*objSize]) {
			t.Errorf("the returning node's copy of object %d is not the new data (old: %v)", idx, bytes.Equal(b, old[idx*objSize:(idx+1)*objSize]))
		}
	}
}

// fileHead returns the first n bytes of s's copy of data object idx of
// the VDI whose data objects start with prefix, or nil.
func fileHead(s *Sheep, prefix string, idx, n int) []byte {
	f, err := os.Open(filepath.Join(s.Dir, "obj", fmt.Sprintf("%s%08x", prefix, idx)))
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil
	}
	return b
}

// objectFiles reads s's on-disk copies of the 4 MiB data objects whose
// file names start with prefix, by object index.
func objectFiles(t *testing.T, s *Sheep, prefix string) map[int][]byte {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(s.Dir, "obj", prefix+"*"))
	files := map[int][]byte{}
	for _, p := range paths {
		if len(filepath.Base(p)) != 16 {
			continue // a temporary file of a write in flight
		}
		idx, err := strconv.ParseUint(filepath.Base(p)[8:], 16, 32)
		if err != nil {
			t.Fatalf("object file %s: %v", p, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[int(idx)] = b
	}
	return files
}
