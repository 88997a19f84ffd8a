package tests

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// currentVnodes maps each node's port to its vnode count in s's current
// epoch (`node list -r`).
func currentVnodes(t *testing.T, s *Sheep) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(s.must(t, nil, "node", "list", "-r")), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("node list -r line %q", line)
		}
		ap, err := netip.ParseAddrPort(f[1])
		if err != nil {
			t.Fatalf("node list -r line %q: %v", line, err)
		}
		out[int(ap.Port())], _ = strconv.Atoi(f[2])
	}
	return out
}

// storeSpace is what a sheep weighs its store at: the bytes available on
// its filesystem plus the bytes its object files take.
func storeSpace(t *testing.T, dir string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	space := st.Bavail * uint64(st.Frsize)
	files, _ := filepath.Glob(filepath.Join(dir, "obj", "*"))
	for _, f := range files {
		var fs unix.Stat_t
		if unix.Stat(f, &fs) == nil {
			space += uint64(fs.Blocks) * 512
		}
	}
	return space
}

// near reports whether every node's count is within 1 of want's (the
// spaces the test measures and those the sheeps measured differ by the
// few blocks of files written in between).
func near(got map[int]int, want map[int]int) bool {
	if len(got) != len(want) {
		return false
	}
	for p, w := range want {
		if g, ok := got[p]; !ok || g < w-1 || g > w+1 {
			return false
		}
	}
	return true
}

// `cluster reweight` as Sheepdog's: with nothing changed it changes
// nothing; after a node's filesystem loses half its room to other files,
// it makes one epoch in which every node's automatic vnodes follow the
// spaces now measured, recovery moves every object to where that epoch
// places it and the data reads back; the new space outlives a restart.
func TestClusterReweight(t *testing.T) {
	parallel(t)
	var sheeps []*Sheep
	var mounts []string
	var spaces []uint64
	for i := range 3 {
		mnt := ext4Image(t, 1<<30)
		dir := filepath.Join(mnt, "store")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mounts = append(mounts, mnt)
		spaces = append(spaces, storeSpace(t, dir))
		s := &Sheep{t: t, Dir: dir, Port: freePort(t)}
		extra := []string{"-n", "-z", strconv.Itoa(i)}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		s.start(extra...)
		sheeps = append(sheeps, s)
	}
	waitNodes(t, sheeps[0], 3)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, sheeps[0], "A", 64<<20)
	vid := proto.VdiNameHash("A")

	byPort := func(v []int) map[int]int {
		m := map[int]int{}
		for i, s := range sheeps {
			m[s.Port] = v[i]
		}
		return m
	}
	if got, want := currentVnodes(t, sheeps[0]), byPort(sheepdogVnodes(spaces)); !near(got, want) {
		t.Fatalf("vnodes after format %v, want %v for spaces %v", got, want, spaces)
	}

	// Nothing changed: no epoch.
	epochs := len(epochLog(t, sheeps[0]))
	if r := sheeps[1].collie(t, nil, "cluster", "reweight"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Fatalf("cluster reweight with nothing changed: exit %d, %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if n := len(epochLog(t, sheeps[0])); n != epochs {
		t.Fatalf("a reweight that changed nothing made %d epochs", n-epochs)
	}

	// Other files take half of node 2's filesystem.
	f, err := os.Create(filepath.Join(mounts[2], "other-files"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(spaces[2]/2)); err != nil {
		f.Close()
		t.Skipf("fallocate: %v", err)
	}
	f.Close()
	oldRing := ring(sheeps, currentVnodes(t, sheeps[0]))
	// Node 2's space as the reweight will weigh it. Measured after, it
	// can be short by the copies recovery has just set aside in .stale
	// (neither objects nor free space, until purged).
	spaces[2] = storeSpace(t, sheeps[2].Dir)

	if r := sheeps[1].collie(t, nil, "cluster", "reweight"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Fatalf("cluster reweight: exit %d, %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if n := len(epochLog(t, sheeps[0])); n != epochs+1 {
		t.Fatalf("the reweight made %d epochs, want 1", n-epochs)
	}
	want := byPort(sheepdogVnodes(spaces))
	got := currentVnodes(t, sheeps[0])
	if !near(got, want) {
		t.Fatalf("vnodes after reweight %v, want %v for spaces %v", got, want, spaces)
	}
	if got[sheeps[2].Port] >= got[sheeps[0].Port] {
		t.Fatalf("vnodes after reweight %v: node 2 kept its weight", got)
	}

	// Recovery moves every object to where the new epoch places it.
	newRing := ring(sheeps, got)
	oids := []uint64{proto.VidToVdiOid(vid)}
	for i := range uint32(16) {
		oids = append(oids, proto.VidToDataOid(vid, i))
	}
	moved := 0
	for _, oid := range oids {
		if !slices.Equal(ports(oldRing.Locate(oid, 2)), ports(newRing.Locate(oid, 2))) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no object of the VDI is placed elsewhere by the new vnodes %v: the test proves nothing", got)
	}
	waitFor(t, 60, "after reweight", func() (bool, string) {
		for _, oid := range oids {
			var holders []int
			for _, s := range sheeps {
				if _, err := os.Stat(filepath.Join(s.Dir, "obj", fmt.Sprintf("%016x", oid))); err == nil {
					holders = append(holders, s.Port)
				}
			}
			slices.Sort(holders) // ports sorts too
			if w := ports(newRing.Locate(oid, 2)); !slices.Equal(holders, w) {
				return false, fmt.Sprintf("object %016x on %v, placed on %v", oid, holders, w)
			}
		}
		return true, ""
	})
	t.Logf("%d of %d objects moved; vnodes %v", moved, len(oids), got)
	for _, s := range sheeps {
		mustRead(t, s, "A", data, "after reweight")
	}

	// The reweighed space is kept: node 2 comes back with it.
	sheeps[2].Stop()
	waitNodes(t, sheeps[0], 2)
	sheeps[2].start("-n", "-z", "2", "--join", sheeps[0].Addr())
	waitNodes(t, sheeps[0], 3)
	if again := currentVnodes(t, sheeps[0]); !near(again, got) {
		t.Fatalf("vnodes after node 2's restart %v, want those of the reweight %v", again, got)
	}
}

// ring is the placement of an epoch of sheeps (zone i for sheeps[i]) with
// the given vnodes by port.
func ring(sheeps []*Sheep, vnodes map[int]int) *placement.Ring {
	var nodes []proto.Node
	for i, s := range sheeps {
		n := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port))),
			NrVnodes: uint16(vnodes[s.Port]), Zone: uint32(i)}
		nodes = append(nodes, n)
	}
	return placement.New(nodes)
}

// ports lists the ports of nodes, sorted.
func ports(nodes []proto.Node) []int {
	var out []int
	for _, n := range nodes {
		out = append(out, int(n.Port))
	}
	slices.Sort(out)
	return out
}
