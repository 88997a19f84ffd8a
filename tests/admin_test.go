package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterShutdownStopsAll: `cluster shutdown` through one node stops
// every sheep of the cluster, commits no epoch on the way down, and the
// restarted cluster serves the same data.
func TestClusterShutdownStopsAll(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "Alice", 32<<20)
	epochs := sheeps[2].must(t, nil, "cluster", "info", "-r")
	sheeps[1].must(t, nil, "cluster", "shutdown")
	for _, s := range sheeps {
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			t.Fatalf("sheep %s still running after cluster shutdown", s.Addr())
		}
	}
	for i, s := range sheeps {
		s.start("-z", strconv.Itoa(i))
	}
	for _, s := range sheeps {
		waitRunning(t, s)
	}
	if after := sheeps[2].must(t, nil, "cluster", "info", "-r"); after != epochs {
		t.Fatalf("epochs changed across shutdown and restart:\nbefore\n%s\nafter\n%s", epochs, after)
	}
	mustRead(t, sheeps[1], "Alice", data, "after cluster shutdown and restart")
}

// TestNodeKill: `node kill ID` ends that node's process; the others carry on.
func TestNodeKill(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	raw := sheeps[0].must(t, nil, "node", "list", "-r")
	var victim *Sheep
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		if f[1] == sheeps[2].Addr() {
			sheeps[0].must(t, nil, "node", "kill", f[0])
			victim = sheeps[2]
		}
	}
	if victim == nil {
		t.Fatalf("%s not in node list %q", sheeps[2].Addr(), raw)
	}
	// As Sheepdog's: the killed node's process ends.
	select {
	case <-victim.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("killed node's process still runs; it answers %+v", victim.collie(t, nil, "vdi", "list"))
	}
	if code := victim.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("killed node exited %d, want 0", code)
	}
	waitNodes(t, sheeps[0], 2)
	sheeps[0].must(t, nil, "vdi", "create", "Alive", "8M")
}

// TestStrictMode: a cluster formatted with -t refuses writes (HALT) when it
// has fewer zones than copies.
func TestStrictMode(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3", "-t")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "8M")
	sheeps[0].must(t, []byte("abc"), "vdi", "write", "Alice", "0", "3")
	sheeps[2].Kill()
	waitNodes(t, sheeps[0], 2)
	r := sheeps[0].collie(t, []byte("xyz"), "vdi", "write", "Alice", "0", "3")
	if r.Code == 0 || !strings.Contains(r.Stderr, "halted") {
		t.Fatalf("write with 2 zones for 3 copies in strict mode: %+v", r)
	}
	if got := sheeps[1].must(t, nil, "vdi", "read", "Alice", "0", "3"); got != "abc" {
		t.Fatalf("read %q", got)
	}
}

// TestRecoveryControls: recovery can be disabled (no copies move after a
// failure), re-enabled (they do), and throttled.
func TestRecoveryControls(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	sheeps[0].must(t, nil, "node", "recovery", "set-throttle", "4", "100")
	if got := sheeps[1].must(t, nil, "node", "recovery", "get-throttle"); got != "max (4), interval (100)\n" {
		t.Fatalf("get-throttle: %q", got)
	}
	data := seedVdi(t, sheeps[0], "Alice", 64<<20)
	if out := sheeps[0].must(t, nil, "cluster", "recover", "disable"); out != "Cluster recovery: disable\n" {
		t.Fatalf("recover disable printed %q", out)
	}
	if info := sheeps[1].must(t, nil, "cluster", "info"); !strings.HasPrefix(info, "Cluster status: running, auto-recovery disabled") {
		t.Fatalf("cluster info: %s", info)
	}
	sheeps[3].Kill()
	live := sheeps[:3]
	waitNodes(t, sheeps[0], 3)
	time.Sleep(2 * time.Second)
	under := 0
	for _, c := range objectCopies(t, live, "0015d167") {
		if c < 2 {
			under++
		}
	}
	if under == 0 {
		t.Fatal("with recovery disabled, every object still has 2 copies: the test proves nothing")
	}
	sheeps[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, live, "0015d167", 2)
	mustRead(t, sheeps[2], "Alice", data, "after recovery")
}

// TestForceRecover: after a whole-cluster restart with one node missing,
// the others wait (WAIT_FOR_JOIN) until `cluster recover force`.
func TestForceRecover(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "Alice", 16<<20)
	for _, s := range sheeps {
		s.Kill()
	}
	sheeps[0].start("-z", "0")
	sheeps[1].start("-z", "1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		info := sheeps[0].collie(t, nil, "cluster", "info").Stdout
		if strings.HasPrefix(info, "Cluster status: Waiting for other nodes to join cluster") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster info while a node is missing: %q", info)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := sheeps[1].collie(t, nil, "vdi", "read", "Alice", "0", "512"); r.Code == 0 {
		t.Fatal("a read was served while waiting for the last epoch's nodes")
	}
	sheeps[0].must(t, nil, "cluster", "recover", "force", "-f")
	waitRunning(t, sheeps[0])
	waitRunning(t, sheeps[1])
	mustRead(t, sheeps[1], "Alice", data, "after force recovery")
}
