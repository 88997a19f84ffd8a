package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// epochRow is one epoch of `cluster info -r`: its number and the protocol
// ports of its nodes, sorted.
type epochRow struct {
	epoch int
	ports []int
}

var (
	epochLine = regexp.MustCompile(`^\d+ (\d+) \[(.*)\]$`)
	nodePort  = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)
)

// epochLog returns s's epoch log, oldest first.
func epochLog(t *testing.T, s *Sheep) []epochRow {
	t.Helper()
	var rows []epochRow
	for _, line := range strings.Split(s.must(t, nil, "cluster", "info", "-r"), "\n") {
		m := epochLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		e, _ := strconv.Atoi(m[1])
		r := epochRow{epoch: e}
		for _, p := range nodePort.FindAllStringSubmatch(m[2], -1) {
			port, _ := strconv.Atoi(p[1])
			r.ports = append(r.ports, port)
		}
		slices.Sort(r.ports)
		rows = append(rows, r)
	}
	slices.Reverse(rows)
	return rows
}

// changes describes how each epoch after the first differs from the one
// before: "-PORT" or "+PORT" per node, "" for an epoch that changes none.
func changes(rows []epochRow) []string {
	var out []string
	for i := 1; i < len(rows); i++ {
		var d []string
		for _, p := range rows[i-1].ports {
			if !slices.Contains(rows[i].ports, p) {
				d = append(d, "-"+strconv.Itoa(p))
			}
		}
		for _, p := range rows[i].ports {
			if !slices.Contains(rows[i-1].ports, p) {
				d = append(d, "+"+strconv.Itoa(p))
			}
		}
		out = append(out, strings.Join(d, ","))
	}
	return out
}

// waitEpochNodes waits until s's current epoch has exactly the nodes of
// want.
func waitEpochNodes(t *testing.T, s *Sheep, want []*Sheep, within time.Duration) {
	t.Helper()
	var ports []int
	for _, w := range want {
		ports = append(ports, w.Port)
	}
	slices.Sort(ports)
	deadline := time.Now().Add(within)
	for {
		rows := epochLog(t, s)
		if len(rows) > 0 && slices.Equal(rows[len(rows)-1].ports, ports) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: epochs %v, want a last epoch of %v", s.Addr(), rows, ports)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readWithin retries reading the whole of VDI name through s until it
// succeeds or within passes; it fails the test unless the data is want.
func readWithin(t *testing.T, s *Sheep, name string, want []byte, within time.Duration, when string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		r := s.collie(t, nil, "vdi", "read", name, "0", strconv.Itoa(len(want)))
		if r.Code == 0 {
			if !bytes.Equal([]byte(r.Stdout), want) {
				t.Fatalf("%s read through %s differs %s", name, s.Addr(), when)
			}
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s not readable through %s %s within %v: %s", name, s.Addr(), when, within, r.Stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func patchVdi(t *testing.T, s *Sheep, name string, data []byte, off int, fill byte) {
	t.Helper()
	patch := bytes.Repeat([]byte{fill}, 1<<20)
	s.must(t, patch, "vdi", "write", name, strconv.Itoa(off), strconv.Itoa(len(patch)))
	copy(data[off:], patch)
}

// TestMinorityForceRecover: 3 nodes, 3 copies; two die 0.3 s apart. The
// survivor, a minority, serves reads at once and refuses writes (HALT)
// until `cluster recover force` re-forms the cluster from it; then writes
// and vdi create work, a new node joins and gets copies, and the two old
// nodes, restarted, rejoin without serving what they missed.
func TestMinorityForceRecover(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	s0 := sheeps[0]
	s0.must(t, nil, "cluster", "format", "--copies=3")
	data := seedVdi(t, s0, "Alice", 16<<20)

	sheeps[1].Kill()
	time.Sleep(300 * time.Millisecond)
	sheeps[2].Kill()
	took := readWithin(t, s0, "Alice", data, 10*time.Second, "after two of three nodes died")
	t.Logf("first full read through the survivor after %v", took)

	start := time.Now()
	r := s0.collie(t, []byte("x"), "vdi", "write", "Alice", "0", "1")
	if r.Code == 0 {
		t.Fatal("a write was acknowledged by a minority")
	}
	t.Logf("write without quorum refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	// Refused, the write may still have reached the survivor's copy: when
	// it came before the failures were detected, the survivor wrote its
	// copy while its peers' failed ("Network error"), and a write that
	// fails leaves its range holding old or new data. Whichever it holds
	// is what every node must serve from now on.
	switch b := s0.must(t, nil, "vdi", "read", "Alice", "0", "1"); {
	case b == "x":
		t.Log("the refused write reached the survivor's copy")
		data[0] = 'x'
	case b != string(data[:1]):
		t.Fatalf("byte 0 reads %q after the refused write of %q, want the old %q or the new", b, "x", data[:1])
	}
	if list := s0.must(t, nil, "node", "list", "-r"); strings.Count(list, "\n") != 3 {
		t.Fatalf("node list shows %q: the decided membership is still the three nodes", list)
	}
	if _, alive, ok := strings.Cut(s0.must(t, nil, "node", "list", "-r", "-v"), "Alive (gossip, not yet decided):\n"); !ok || strings.Count(alive, "\n") != 1 {
		t.Fatalf("node list -v shows alive %q, want the survivor alone", alive)
	}

	s0.must(t, nil, "cluster", "recover", "force", "-f")
	patchVdi(t, s0, "Alice", data, 5<<20, 0xa5)
	bob := seedVdi(t, s0, "Bob", 8<<20)
	waitEpochNodes(t, s0, sheeps[:1], 20*time.Second)
	if !strings.Contains(sheepLog(t, s0), "forced by cluster recover force") {
		t.Fatal("the forced epoch is not in sheep.log")
	}

	s3 := startSheep(t, "-z", "3", "--join", s0.Addr())
	waitEpochNodes(t, s0, []*Sheep{s0, s3}, 30*time.Second)
	waitRunning(t, s3)
	live := []*Sheep{s0, s3}
	waitRecovered(t, live, "0015d167", 2)
	mustRead(t, s3, "Alice", data, "through the new node")

	// The old nodes come back with the copies they had: they rejoin the
	// re-formed cluster and serve what it has now.
	sheeps[1].start("-z", "1")
	sheeps[2].start("-z", "2")
	all := []*Sheep{s0, sheeps[1], sheeps[2], s3}
	waitEpochNodes(t, s0, all, 60*time.Second)
	for _, s := range all {
		waitRunning(t, s)
	}
	waitRecovered(t, all, "0015d167", 3)
	for _, s := range sheeps[1:] {
		mustRead(t, s, "Alice", data, "through an old node that rejoined")
		mustRead(t, s, "Bob", bob, "through an old node that rejoined")
		if !strings.Contains(sheepLog(t, s), "dropping its raft log to rejoin") {
			t.Errorf("%s did not log its rejoin", s.Addr())
		}
	}
	for i, c := range changes(epochLog(t, s0)) {
		if len(strings.Split(c, ",")) != 1 || c == "" {
			t.Errorf("epoch %d changes %q, want one node", i+2, c)
		}
	}
}

// TestMajoritySurvives: 5 nodes, 3 copies; two die at once. The three
// left are a majority: writes go on with no command typed, and each
// failure is an epoch of its own.
func TestMajoritySurvives(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 5)
	s0 := sheeps[0]
	s0.must(t, nil, "cluster", "format", "--copies=3")
	data := seedVdi(t, s0, "Alice", 16<<20)
	before := len(epochLog(t, s0))

	sheeps[3].Kill()
	sheeps[4].Kill()
	start := time.Now()
	patchVdi(t, sheeps[1], "Alice", data, 2<<20, 0x3c)
	t.Logf("first write after the failures took %v", time.Since(start).Round(time.Millisecond))
	waitEpochNodes(t, s0, sheeps[:3], 30*time.Second)
	rows := epochLog(t, s0)
	got := changes(rows)[before-1:]
	want := []string{"-" + strconv.Itoa(sheeps[3].Port), "-" + strconv.Itoa(sheeps[4].Port)}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("epochs after two failures change %v, want one failure each %v", got, want)
	}
	waitRecovered(t, sheeps[:3], "0015d167", 3)
	for _, s := range sheeps[:3] {
		mustRead(t, s, "Alice", data, "after two of five nodes died")
	}
}

// TestTwoNodes: with two nodes only one votes. Killing the other leaves a
// cluster that goes on; killing the voter leaves one that serves reads
// and, after `cluster recover force`, writes. `cluster shutdown` stops the
// survivor in either state, with or without a leader.
func TestTwoNodes(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		name     string
		victim   int // sheeps[0] bootstrapped the cluster: the voter
		force    bool
		shutdown bool // before any force: without a leader
	}{
		{"non-voter dies", 1, false, false},
		{"voter dies", 0, true, false},
		{"voter dies then shutdown without a leader", 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sheeps := startCluster(t, 2)
			sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
			data := seedVdi(t, sheeps[1], "Alice", 8<<20)
			sheeps[tc.victim].Kill()
			s := sheeps[1-tc.victim]
			readWithin(t, s, "Alice", data, 10*time.Second, "after the other node died")
			if tc.shutdown {
				s.must(t, nil, "cluster", "shutdown")
				select {
				case <-s.exited:
				case <-time.After(15 * time.Second):
					t.Fatal("the survivor still runs after cluster shutdown without a leader")
				}
				return
			}
			if tc.force {
				s.must(t, nil, "cluster", "recover", "force", "-f")
			}
			patchVdi(t, s, "Alice", data, 1<<20, 0x77)
			waitEpochNodes(t, s, []*Sheep{s}, 20*time.Second)
			mustRead(t, s, "Alice", data, "after the other node died")
			s.must(t, nil, "cluster", "shutdown")
			select {
			case <-s.exited:
			case <-time.After(15 * time.Second):
				t.Fatal("the survivor still runs after cluster shutdown")
			}
		})
	}
}

// TestFourOfSixEpochs: four of six nodes die 0.5 s apart. Each failure is
// an epoch of its own, recorded in order: committed as they are noticed
// while a majority of voters lives, and by `cluster recover force` (the
// first) and the re-formed cluster (the rest) once none does.
func TestFourOfSixEpochs(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 6)
	s0 := sheeps[0]
	s0.must(t, nil, "cluster", "format", "--copies=6")
	data := seedVdi(t, s0, "Alice", 8<<20)
	before := len(epochLog(t, s0))
	var killed []string
	for _, i := range []int{5, 4, 3, 2} {
		sheeps[i].Kill()
		killed = append(killed, "-"+strconv.Itoa(sheeps[i].Port))
		time.Sleep(500 * time.Millisecond)
	}
	readWithin(t, s0, "Alice", data, 10*time.Second, "after four of six nodes died")
	time.Sleep(3 * time.Second) // failure detection
	if r := s0.collie(t, []byte("x"), "vdi", "write", "Alice", "0", "1"); r.Code != 0 {
		t.Logf("no quorum left (%s): cluster recover force", strings.TrimSpace(r.Stderr))
		s0.must(t, nil, "cluster", "recover", "force", "-f")
	} else {
		data[0] = 'x'
	}
	waitEpochNodes(t, s0, sheeps[:2], 30*time.Second)
	got := changes(epochLog(t, s0))[before-1:]
	if len(got) != 4 {
		t.Fatalf("epochs after four failures change %v, want four, one failure each", got)
	}
	sorted, want := slices.Clone(got), slices.Clone(killed)
	slices.Sort(sorted)
	slices.Sort(want)
	if !slices.Equal(sorted, want) {
		t.Fatalf("epochs change %v, want one each of %v", got, killed)
	}
	t.Logf("failures in kill order %v, epochs in order %v", killed, got)
	patchVdi(t, sheeps[1], "Alice", data, 3<<20, 0x42)
	for _, s := range sheeps[:2] {
		mustRead(t, s, "Alice", data, "after four of six nodes died")
	}
}

// TestOneClusterPerGossipPool: a formatted 3-node cluster and a fresh
// cluster of 3 (bootstrapped without --join) meet in one gossip pool when
// a node of the first is restarted pointed at both. They refuse each other
// and say so on both sides; no node list mixes them.
func TestOneClusterPerGossipPool(t *testing.T) {
	parallel(t)
	xs := startCluster(t, 3)
	xs[0].must(t, nil, "cluster", "format", "--copies=3")
	data := seedVdi(t, xs[0], "Alice", 8<<20)
	fs := startCluster(t, 3)
	// The pools meet right away: a cluster is named from its bootstrap
	// on, and a node that joined it holds that name from then on (until
	// 2026-12-06 a node knew no identity until the leader named the
	// cluster, conflicted with nobody meanwhile, and the two clusters
	// took in each other's nodes).
	xs[2].Kill()
	xs[2].start("-z", "2", "--join", fs[0].Addr()+","+xs[0].Addr())
	waitRunning(t, xs[2])
	time.Sleep(7 * time.Second) // a push/pull round of gossip: each side would learn the other's nodes
	for _, group := range [][]*Sheep{xs, fs} {
		for _, s := range group {
			for _, args := range [][]string{{"node", "list", "-r"}, {"node", "list", "-r", "-v"}} {
				out := s.must(t, nil, args...)
				for _, other := range append(slices.Clone(xs), fs...) {
					mine := slices.Contains(group, other)
					if strings.Contains(out, other.Addr()+" ") != mine {
						t.Errorf("%s: %v lists %s: %v\n%s", s.Addr(), args, other.Addr(), !mine, out)
					}
				}
			}
		}
	}
	refusedX, refusedF := false, false
	for _, s := range xs {
		refusedX = refusedX || strings.Contains(sheepLog(t, s), "refusing gossip peer")
	}
	for _, s := range fs {
		refusedF = refusedF || strings.Contains(sheepLog(t, s), "refusing gossip peer")
	}
	if !refusedX || !refusedF {
		t.Fatalf("refusal logged by the formatted cluster: %v, by the fresh one: %v", refusedX, refusedF)
	}
	mustRead(t, xs[2], "Alice", data, "after meeting another cluster")
}

// TestExclusiveSetattr: four concurrent `vdi setattr -x` of one key,
// through different nodes: exactly one succeeds, and its value is kept.
func TestExclusiveSetattr(t *testing.T) {
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "8M")
	for round := range 3 {
		key := fmt.Sprintf("owner%d", round)
		var wg sync.WaitGroup
		results := make([]Result, 4)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = sheeps[i%3].collie(t, nil, "vdi", "setattr", "-x", "Alice", key, fmt.Sprintf("value%d", i))
			}()
		}
		wg.Wait()
		var won []int
		for i, r := range results {
			if r.Code == 0 {
				won = append(won, i)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d of 4 exclusive setattrs succeeded (%v): %+v", round, len(won), won, results)
		}
		if got := sheeps[2].must(t, nil, "vdi", "getattr", "Alice", key); got != fmt.Sprintf("value%d", won[0]) {
			t.Fatalf("round %d: getattr %q, the winner was %d", round, got, won[0])
		}
	}
}

// TestStoreFailureLeaves: a node whose object dir is removed, or stops
// taking new files (immutable, which stops root too), under load leaves
// the cluster (an epoch without it, logged), and its objects are back to
// full redundancy on the others.
func TestStoreFailureLeaves(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		name       string
		breakStore func(t *testing.T, obj string)
	}{
		{"removed", func(t *testing.T, obj string) {
			if err := os.RemoveAll(obj); err != nil {
				t.Fatal(err)
			}
		}},
		{"unwritable", func(t *testing.T, obj string) {
			if out, err := exec.Command("chattr", "+i", obj).CombinedOutput(); err != nil {
				skipUnlessRequired(t, "chattr +i %s: %v %s", obj, err, out)
			}
			t.Cleanup(func() { exec.Command("chattr", "-i", obj).Run() })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { storeFailureLeaves(t, tc.breakStore) })
	}
}

func storeFailureLeaves(t *testing.T, breakStore func(t *testing.T, obj string)) {
	sheeps := startCluster(t, 4)
	s0 := sheeps[0]
	s0.must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, s0, "Alice", 32<<20)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() { // load: rewrite the first MiB over and over through node 1
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			patch := bytes.Repeat([]byte{byte(i)}, 1<<20)
			if r := sheeps[1].collie(t, patch, "vdi", "write", "Alice", "0", strconv.Itoa(len(patch))); r.Code == 0 {
				mu.Lock()
				copy(data, patch)
				mu.Unlock()
			}
		}
	}()
	victim := sheeps[3]
	time.Sleep(time.Second)
	breakStore(t, filepath.Join(victim.Dir, "obj"))
	live := sheeps[:3]
	waitEpochNodes(t, s0, live, 30*time.Second)
	close(stop)
	wg.Wait()
	if !strings.Contains(sheepLog(t, victim), "store failed: leaving the cluster") {
		t.Fatal("the failed node did not log why it left")
	}
	waitRecovered(t, live, "0015d167", 2)
	for _, s := range live {
		mustRead(t, s, "Alice", data, "after a node's store failed")
	}
}

// TestElectionLogged: raft's leader election and memberlist's failure
// detection reach sheep.log at info level.
func TestElectionLogged(t *testing.T) {
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	sheeps[0].Kill() // it bootstrapped the cluster: the first leader
	waitEpochNodes(t, sheeps[1], sheeps[1:], 30*time.Second)
	var logs string
	for _, s := range sheeps[1:] {
		logs += sheepLog(t, s)
	}
	for _, want := range []string{
		`level=INFO msg="raft: entering candidate state`,
		`level=INFO msg="raft: entering leader state`,
		`level=INFO msg="gossip: node left" node=` + sheeps[0].Addr(),
		`level=INFO msg="new epoch" epoch=2 change="left ` + sheeps[0].Addr(),
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("sheep.log of the survivors lacks %q", want)
		}
	}
}

// TestMinorityNBDWrites: NBD writes through a minority wait for a quorum
// and fail when none comes, like the native protocol's; reads are served;
// after `cluster recover force` writes go through.
func TestMinorityNBDWrites(t *testing.T) {
	parallel(t)
	nbdAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	voter := startSheep(t, "-z", "0")
	s := startSheep(t, "-z", "1", "--join", voter.Addr(), "--nbd", nbdAddr)
	waitNodes(t, voter, 2)
	voter.must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, s, "Alice", 8<<20)
	voter.Kill() // s does not vote: no quorum left
	n := dialNBD(t, nbdAddr, "Alice")
	got, errno := n.read(0, 1<<20)
	if errno != 0 || !bytes.Equal(got, data[:1<<20]) {
		t.Fatalf("NBD read through the minority: errno %d, same data %v", errno, bytes.Equal(got, data[:1<<20]))
	}
	start := time.Now()
	if errno := n.write(0, bytes.Repeat([]byte{1}, 4096)); errno == 0 {
		t.Fatal("an NBD write was acknowledged by a minority")
	}
	t.Logf("NBD write without quorum failed after %v", time.Since(start).Round(time.Millisecond))
	s.must(t, nil, "cluster", "recover", "force", "-f")
	patch := bytes.Repeat([]byte{2}, 4096)
	if errno := n.write(4096, patch); errno != 0 {
		t.Fatalf("NBD write after recover force: errno %d", errno)
	}
	copy(data[4096:], patch)
	mustRead(t, s, "Alice", data, "after recover force (the refused write changed nothing)")
}

// TestShutdownStates: `cluster shutdown` stops every sheep of a cluster
// that is not formatted yet, and of one waiting for a missing node after a
// whole-cluster restart.
func TestShutdownStates(t *testing.T) {
	parallel(t)
	waitExit := func(t *testing.T, sheeps []*Sheep) {
		t.Helper()
		for _, s := range sheeps {
			select {
			case <-s.exited:
			case <-time.After(15 * time.Second):
				t.Fatalf("sheep %s still running after cluster shutdown", s.Addr())
			}
		}
	}
	t.Run("unformatted", func(t *testing.T) {
		sheeps := startCluster(t, 2)
		sheeps[1].must(t, nil, "cluster", "shutdown")
		waitExit(t, sheeps)
	})
	t.Run("waiting for join", func(t *testing.T) {
		sheeps := startCluster(t, 3)
		sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
		for _, s := range sheeps {
			s.Kill()
		}
		sheeps[0].start("-z", "0")
		sheeps[1].start("-z", "1")
		deadline := time.Now().Add(20 * time.Second)
		for !strings.HasPrefix(sheeps[1].collie(t, nil, "cluster", "info").Stdout, "Cluster status: Waiting for other nodes to join cluster") {
			if time.Now().After(deadline) {
				t.Fatal("not waiting for the missing node")
			}
			time.Sleep(200 * time.Millisecond)
		}
		sheeps[1].must(t, nil, "cluster", "shutdown")
		waitExit(t, sheeps[:2])
	})
}
