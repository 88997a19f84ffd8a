package tests

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestJoinRebalance: a node joining a running cluster receives its share of
// the objects and serves them.
func TestJoinRebalance(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "Alice", 128<<20)

	newcomer := startSheep(t, "-z", "3", "--join", sheeps[1].Addr())
	all := append(sheeps, newcomer)
	waitNodes(t, sheeps[0], 4)
	waitRunning(t, newcomer)
	waitRecovered(t, all, "0015d167", 2)
	mine, _ := filepath.Glob(filepath.Join(newcomer.Dir, "obj", "0015d167*"))
	if len(mine) < 4 {
		t.Fatalf("the new node holds %d of 32 objects (x2 copies over 4 nodes): no rebalance", len(mine))
	}
	mustRead(t, newcomer, "Alice", data, "after it joined")
}

// TestGatewayNode: a gateway-only sheep (-g) stores nothing but serves I/O.
func TestGatewayNode(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	gw := startSheep(t, "-g", "-z", "9", "--join", sheeps[0].Addr())
	waitNodes(t, sheeps[0], 3)
	gw.must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, gw, "Alice", 16<<20)
	mustRead(t, gw, "Alice", data, "through the gateway")
	if objs, _ := filepath.Glob(filepath.Join(gw.Dir, "obj", "0*")); len(objs) != 0 {
		t.Fatalf("gateway node stores %d objects", len(objs))
	}
	if c := objectCopies(t, sheeps, "0015d167"); len(c) != 4 {
		t.Fatalf("data objects on the storage nodes: %v", c)
	}
	list := gw.must(t, nil, "node", "list", "-r")
	if !strings.Contains(list, gw.Addr()+" 0 ") {
		t.Fatalf("gateway should list 0 vnodes:\n%s", list)
	}
}

// TestJoinOtherClusterRefused: a node of one cluster cannot join another.
func TestJoinOtherClusterRefused(t *testing.T) {
	parallel(t)
	a := startSheep(t, "-z", "0")
	a.must(t, nil, "cluster", "format", "--copies=1")
	b := startSheep(t, "-z", "1")
	b.must(t, nil, "cluster", "format", "--copies=1")
	b.Stop()
	r := run(t, nil, bin("sheep"), "-f", "-b", "127.0.0.1", "--nbd", "none", "-p", strconv.Itoa(b.Port), "-z", "1", "--join", a.Addr(), b.Dir)
	if r.Code == 0 || !strings.Contains(r.Stderr, "refusing to join") {
		t.Fatalf("joining another cluster: %+v", r)
	}
	if list := a.must(t, nil, "node", "list", "-r"); strings.Count(list, "\n") != 1 {
		t.Fatalf("node list of the first cluster: %q", list)
	}
}
