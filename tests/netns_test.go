package tests

import (
	"bytes"
	crand "crypto/rand"
	"fmt"
	"net"
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

// netLab is a small network for partition tests: one network namespace
// per sheep, each joined to a Linux bridge by a veth pair, with the
// root namespace on the bridge too (the tests' clients reach every node
// from there). Links are cut the way an operator sees failures: a link
// taken down (silence both ways), packets into one namespace dropped (a
// one-way cut), or a group of nodes moved to a bridge of its own (a
// split). Every node knows every other's MAC address for good (permanent
// neighbour entries), so a cut is never undone or made noisy by ARP.
//
// It needs root and iproute2; without them the test is skipped (or fails
// under SHEEPDOG_REQUIRE_ALL=1). Everything it creates is removed when the
// test ends, whether it passed or not.
type netLab struct {
	t      *testing.T
	prefix string // of every namespace and link name: "sdg" + pid + lab number
	subnet string // "10.A.B."
	bridge string // the bridge everyone is on
	island string // the bridge a split moves a group to
	nodes  []labNode
}

type labNode struct {
	ns, veth, peer, ip, mac string
}

var labSeq int

// newNetLab builds a network of n namespaces, or skips the test.
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipUnlessRequired(t, "network namespaces need the ip command (iproute2)")
	}
	cleanStaleLabs(t)
	labSeq++
	pid := os.Getpid()
	l := &netLab{t: t, prefix: fmt.Sprintf("sdg%d-%d", pid%100000, labSeq)}
	l.subnet = fmt.Sprintf("10.%d.%d.", 200+pid%50, (pid/50+labSeq)%256)
	l.bridge, l.island = l.prefix+"b", l.prefix+"i"
	t.Cleanup(l.destroy)
	// The bridge's MAC is set, not left to the kernel: a bridge takes the
	// lowest MAC of its ports unless told one, and would change it when
	// split moves a port away, leaving the namespaces' permanent entry
	// for the root namespace's address pointing nowhere.
	brMAC := fmt.Sprintf("02:5d:%02x:%02x:%02x:01", pid>>8&0xff, pid&0xff, labSeq&0xff)
	l.ip("link", "add", l.bridge, "address", brMAC, "type", "bridge")
	l.ip("link", "add", l.island, "type", "bridge")
	l.ip("addr", "add", l.subnet+"1/24", "dev", l.bridge)
	l.ip("link", "set", l.bridge, "up")
	l.ip("link", "set", l.island, "up")
	for i := 0; i < n; i++ {
		nd := labNode{ns: fmt.Sprintf("%s-n%d", l.prefix, i), veth: fmt.Sprintf("%sv%d", l.prefix, i), peer: fmt.Sprintf("%sp%d", l.prefix, i),
			ip: l.subnet + strconv.Itoa(10+i)}
		l.ip("netns", "add", nd.ns)
		l.ip("link", "add", nd.veth, "type", "veth", "peer", "name", nd.peer)
		l.ip("link", "set", nd.peer, "netns", nd.ns)
		l.ip("link", "set", nd.veth, "master", l.bridge)
		l.ip("link", "set", nd.veth, "up")
		l.ip("-n", nd.ns, "addr", "add", nd.ip+"/24", "dev", nd.peer)
		l.ip("-n", nd.ns, "link", "set", nd.peer, "up")
		l.ip("-n", nd.ns, "link", "set", "lo", "up")
		out := l.ip("-n", nd.ns, "-o", "link", "show", nd.peer)
		f := strings.Fields(out[strings.Index(out, "link/ether"):])
		nd.mac = f[1]
		l.nodes = append(l.nodes, nd)
	}
	for _, a := range l.nodes {
		l.ip("-n", a.ns, "neigh", "replace", l.subnet+"1", "lladdr", brMAC, "dev", a.peer, "nud", "permanent")
		l.ip("neigh", "replace", a.ip, "lladdr", a.mac, "dev", l.bridge, "nud", "permanent")
		for _, b := range l.nodes {
			if a.ns != b.ns {
				l.ip("-n", a.ns, "neigh", "replace", b.ip, "lladdr", b.mac, "dev", a.peer, "nud", "permanent")
			}
		}
	}
	return l
}

// ip runs the ip command and fails the test if it fails.
func (l *netLab) ip(args ...string) string {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// destroy removes the namespaces (and with them their veth ends) and the
// bridges. It runs after the sheeps' cleanups (registered later, run
// first), and ignores what is already gone.
func (l *netLab) destroy() {
	for _, nd := range l.nodes {
		exec.Command("ip", "link", "del", nd.veth).Run()
		exec.Command("ip", "netns", "del", nd.ns).Run()
	}
	exec.Command("ip", "link", "del", l.bridge).Run()
	exec.Command("ip", "link", "del", l.island).Run()
}

// cleanStaleLabs removes the namespaces and links of labs whose test
// process is gone (a run killed before its cleanups).
func cleanStaleLabs(t *testing.T) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	stale := map[string]bool{}
	for _, line := range strings.Split(string(out)+string(links), "\n") {
		f := strings.Fields(line)
		for _, w := range f {
			w = strings.TrimSuffix(strings.Split(w, "@")[0], ":")
			if !strings.HasPrefix(w, "sdg") {
				continue
			}
			pid, _, ok := strings.Cut(w[3:], "-")
			if !ok {
				continue
			}
			p, err := strconv.Atoi(pid)
			if err != nil || p == os.Getpid()%100000 {
				continue
			}
			if _, err := os.Stat("/proc/" + pid); err == nil {
				continue // most likely still running
			}
			stale[w] = true
		}
	}
	for w := range stale {
		if exec.Command("ip", "netns", "del", w).Run() != nil {
			exec.Command("ip", "link", "del", w).Run()
		}
	}
}

// startSheep starts a sheep in node i's namespace, bound to its address.
func (l *netLab) startSheep(i, port int, extra ...string) *Sheep {
	l.t.Helper()
	s := &Sheep{t: l.t, Dir: l.t.TempDir(), Port: port, Host: l.nodes[i].ip, NS: l.nodes[i].ns}
	s.start(extra...)
	return s
}

// startCluster starts n sheeps, one per namespace, all on port (each
// namespace has its ports to itself), and waits until all are members.
func (l *netLab) startCluster(n int) []*Sheep {
	l.t.Helper()
	port := freePort(l.t)
	var sheeps []*Sheep
	for i := 0; i < n; i++ {
		var extra []string
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, l.startSheep(i, port, extra...))
	}
	waitNodes(l.t, sheeps[0], n)
	return sheeps
}

// cut takes node i's link down: from then on nothing reaches it and
// nothing it sends leaves, without a reset or an error (a pulled cable).
func (l *netLab) cut(i int) { l.ip("link", "set", l.nodes[i].veth, "down") }

// heal brings node i's link back up.
func (l *netLab) heal(i int) { l.ip("link", "set", l.nodes[i].veth, "up") }

// cutInbound drops every packet on its way into node i's namespace: it
// can still send, it receives nothing (a pfifo queue of length 0 on the
// bridge side of its link).
func (l *netLab) cutInbound(i int) {
	if out, err := exec.Command("tc", "qdisc", "replace", "dev", l.nodes[i].veth, "root", "pfifo", "limit", "0").CombinedOutput(); err != nil {
		skipUnlessRequired(l.t, "one-way cut with tc: %v: %s", err, out)
	}
}

// healInbound undoes cutInbound.
func (l *netLab) healInbound(i int) {
	exec.Command("tc", "qdisc", "del", "dev", l.nodes[i].veth, "root").Run()
}

// split moves the nodes of group to a bridge of their own: they reach
// each other and nobody else (the root namespace stays with the others).
func (l *netLab) split(group ...int) {
	for _, i := range group {
		l.ip("link", "set", l.nodes[i].veth, "master", l.island)
	}
}

// join undoes split.
func (l *netLab) join(group ...int) {
	for _, i := range group {
		l.ip("link", "set", l.nodes[i].veth, "master", l.bridge)
	}
}

// collieIn runs collie inside s's namespace against s (for a node the
// root namespace cannot reach while it is cut off).
func collieIn(t *testing.T, s *Sheep, stdin []byte, timeout time.Duration, args ...string) (Result, time.Duration) {
	t.Helper()
	args = append([]string{"netns", "exec", s.NS, bin("collie")}, args...)
	args = append(args, "-a", s.Host, "-p", strconv.Itoa(s.Port))
	start := time.Now()
	r := runTimeout(t, stdin, timeout, "ip", args...)
	return r, time.Since(start)
}

// TestNetLab checks the lab itself: a cut node is silent (a connection
// attempt times out rather than being refused), and a healed one answers.
func TestNetLab(t *testing.T) {
	l := newNetLab(t, 2)
	sheeps := l.startCluster(2)
	l.cut(1)
	if c, err := net.DialTimeout("tcp", sheeps[1].Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("a cut node accepted a connection")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dialling a cut node: %v, want a timeout (silence)", err)
	}
	l.heal(1)
	pingWithin(t, sheeps[1], 5*time.Second, "after its link came back")
	l.cutInbound(1)
	if err := ping(sheeps[1].Addr()); err == nil {
		t.Fatal("a node cut inbound answered")
	}
	l.healInbound(1)
	pingWithin(t, sheeps[1], 5*time.Second, "after the one-way cut ended")
}

// pingWithin fails the test unless s answers within d (a link brought
// up takes a moment to pass packets).
func pingWithin(t *testing.T, s *Sheep, d time.Duration, when string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := ping(s.Addr())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer %s: %v", s.Addr(), when, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeStream writes 64 KiB blocks of fresh random bytes through s into
// VDI name, one collie command each, cycling over [0, span), until stop is
// closed. It keeps want (the VDI's content as acknowledged) up to date
// and reports how long the slowest write took and how many failed.
type writeStream struct {
	mu       sync.Mutex
	want     []byte
	writes   int
	failures []string
	slowest  time.Duration
	slowAt   time.Time
	done     chan struct{}
}

func startWriteStream(t *testing.T, s *Sheep, name string, want []byte, span int, stop <-chan struct{}) *writeStream {
	w := &writeStream{want: want, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		block := make([]byte, 64<<10)
		for off := 0; ; off = (off + len(block)) % span {
			select {
			case <-stop:
				return
			default:
			}
			crand.Read(block)
			start := time.Now()
			r := runTimeout(t, block, 60*time.Second, bin("collie"), "vdi", "write", name, strconv.Itoa(off), strconv.Itoa(len(block)),
				"-a", s.Host, "-p", strconv.Itoa(s.Port))
			took := time.Since(start)
			w.mu.Lock()
			w.writes++
			if took > w.slowest {
				w.slowest, w.slowAt = took, start
			}
			if r.Code != 0 {
				w.failures = append(w.failures, fmt.Sprintf("at %d: exit %d after %v: %s", off, r.Code, took, strings.TrimSpace(r.Stderr)))
			} else {
				copy(w.want[off:], block)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// sameCopies fails the test unless every sheep holds the same set of
// objects with prefix, byte for byte (copies = number of sheeps).
func sameCopies(t *testing.T, sheeps []*Sheep, prefix string) {
	t.Helper()
	first := objectFiles(t, sheeps[0], prefix)
	if len(first) == 0 {
		t.Fatalf("%s holds no object %s*", sheeps[0].Addr(), prefix)
	}
	for _, s := range sheeps[1:] {
		got := objectFiles(t, s, prefix)
		if len(got) != len(first) {
			t.Fatalf("%s holds %d objects %s*, %s holds %d", s.Addr(), len(got), prefix, sheeps[0].Addr(), len(first))
		}
		for name, b := range first {
			if !bytes.Equal(got[name], b) {
				t.Fatalf("object %d of %s* differs between %s and %s", name, prefix, s.Addr(), sheeps[0].Addr())
			}
		}
	}
}

// TestPartitionCutNode (issue 19): three nodes in namespaces, three
// copies. Node 2's link goes down while writes stream through node 0: no
// write waits more than 10 s and none fails, and a write through node 2
// is refused while it is cut off. Once the link is back node 2 is a
// member again within 15 s with no command typed, has set aside its old
// copies, holds every object as the others do and serves the same data.
func TestPartitionCutNode(t *testing.T) {
	l := newNetLab(t, 3)
	cutNodeScenario(t, l, func() { l.cut(2) }, func() { l.heal(2) })
}

// TestPartitionOneWay (issue 19): as TestPartitionCutNode, but node 2
// can still send and receives nothing. It must end the same way, with
// one epoch for its removal and one for its return (no flapping).
func TestPartitionOneWay(t *testing.T) {
	l := newNetLab(t, 3)
	cutNodeScenario(t, l, func() { l.cutInbound(2) }, func() { l.healInbound(2) })
}

// cutNodeScenario runs a three-node cluster through cut (node 2 off the
// network) and heal, with writes streaming through node 0, and checks
// what TestPartitionCutNode says.
func cutNodeScenario(t *testing.T, l *netLab, cut, heal func()) {
	sheeps := l.startCluster(3)
	s0, s2 := sheeps[0], sheeps[2]
	s0.must(t, nil, "cluster", "format", "--copies=3")
	want := seedVdi(t, s0, "Alice", 16<<20)
	epochsBefore := len(epochAddrs(t, s0))

	stop := make(chan struct{})
	w := startWriteStream(t, s0, "Alice", want, 12<<20, stop)
	time.Sleep(2 * time.Second)
	cut()
	cutAt := time.Now()
	// A write through the cut-off node, where the stream never writes.
	r, took := collieIn(t, s2, bytes.Repeat([]byte{0xee}, 4096), 60*time.Second, "vdi", "write", "Alice", strconv.Itoa(15<<20), "4096")
	if r.Code == 0 {
		t.Fatal("a write through the cut-off node was acknowledged")
	}
	t.Logf("write through the cut-off node refused after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	if d := time.Until(cutAt.Add(10 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	close(stop)
	<-w.done
	w.mu.Lock()
	t.Logf("%d writes through node 0, slowest %v (started %v after the cut)", w.writes, w.slowest.Round(time.Millisecond), w.slowAt.Sub(cutAt).Round(time.Millisecond))
	if len(w.failures) > 0 {
		t.Fatalf("%d writes failed: %v", len(w.failures), w.failures)
	}
	if w.slowest > 10*time.Second {
		t.Fatalf("a write waited %v", w.slowest)
	}
	w.mu.Unlock()
	waitEpochNodesNS(t, s0, sheeps[:2], 10*time.Second)
	r, _ = collieIn(t, s2, nil, 30*time.Second, "cluster", "info")
	status := strings.SplitN(r.Stdout, "\n", 2)[0]
	if r.Code != 0 || strings.HasPrefix(status, "Cluster status: running") {
		t.Fatalf("cut-off node's cluster info: exit %d %q", r.Code, status)
	}
	t.Logf("cut-off node says %q", status)

	heal()
	healAt := time.Now()
	waitEpochNodesNS(t, s0, sheeps, 15*time.Second)
	t.Logf("node 2 a member again %v after the heal", time.Since(healAt).Round(time.Millisecond))
	waitRunning(t, s2)
	waitRecovered(t, sheeps, "0015d167", 3)
	if !strings.Contains(sheepLog(t, s2), "set aside copies that may have missed writes") {
		t.Error("node 2 did not set its old copies aside")
	}
	sameCopies(t, sheeps, "0015d167")
	for _, s := range sheeps {
		mustRead(t, s, "Alice", want, "after the heal")
	}
	rows := epochAddrs(t, s0)
	t.Logf("epochs from the cut to the end: %d (%v); node 0 held a peer gossip reported dead %d times", len(rows)-epochsBefore, rows[epochsBefore:],
		strings.Count(sheepLog(t, s0), "keeping it in the epochs"))
	if n := len(rows) - epochsBefore; n != 2 {
		t.Errorf("%d epochs from the cut to the end, want 2 (node 2 out, node 2 back)", n)
	}
}

// TestPartitionSplit (issue 19): five nodes, three copies, split 2|3 for
// 30 s with writers on both sides. The two are the nodes without a copy
// of the VDI's inode, so that every request of theirs needs the other
// side. The three keep writing; the two refuse writes and a VDI create
// (and never claim the VDI is gone); after the heal every node is a
// member again and serves exactly what was acknowledged.
func TestPartitionSplit(t *testing.T) {
	l := newNetLab(t, 5)
	sheeps := l.startCluster(5)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	want := seedVdi(t, sheeps[0], "Alice", 16<<20)
	var major, minor []int
	for i, s := range sheeps {
		if files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "8015d167*")); len(files) > 0 {
			major = append(major, i)
		} else {
			minor = append(minor, i)
		}
	}
	if len(major) != 3 {
		t.Fatalf("nodes %v hold Alice's inode, want three", major)
	}
	sMaj, sMin := sheeps[major[0]], sheeps[minor[0]]
	t.Logf("split %v | %v", minor, major)

	l.split(minor...)
	splitAt := time.Now()
	stop := make(chan struct{})
	w := startWriteStream(t, sMaj, "Alice", want, 12<<20, stop)
	attempts := 0
	for time.Since(splitAt) < 30*time.Second {
		r, took := collieIn(t, sMin, bytes.Repeat([]byte{0xee}, 4096), 90*time.Second, "vdi", "write", "Alice", strconv.Itoa(14<<20+attempts*4096), "4096")
		if r.Code == 0 {
			t.Fatalf("a write through the minority side was acknowledged %v after the split", time.Since(splitAt))
		}
		if strings.Contains(r.Stderr, "No VDI found") {
			t.Fatalf("the minority side says Alice does not exist: %s", r.Stderr)
		}
		t.Logf("minority write refused after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
		attempts++
	}
	r, took := collieIn(t, sMin, nil, 60*time.Second, "vdi", "create", "Bob", "4M")
	if r.Code == 0 {
		t.Fatal("the minority side created a VDI")
	}
	t.Logf("minority vdi create refused after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	r, _ = collieIn(t, sMin, nil, 30*time.Second, "cluster", "info")
	if status := strings.SplitN(r.Stdout, "\n", 2)[0]; r.Code != 0 || strings.HasPrefix(status, "Cluster status: running") {
		t.Fatalf("minority node's cluster info: exit %d %q", r.Code, status)
	}
	close(stop)
	<-w.done
	w.mu.Lock()
	t.Logf("%d writes through the majority side, slowest %v", w.writes, w.slowest.Round(time.Millisecond))
	if len(w.failures) > 0 {
		t.Fatalf("%d majority writes failed: %v", len(w.failures), w.failures)
	}
	w.mu.Unlock()

	l.join(minor...)
	healAt := time.Now()
	waitEpochNodesNS(t, sMaj, sheeps, 30*time.Second)
	t.Logf("all five members again %v after the heal", time.Since(healAt).Round(time.Millisecond))
	for _, s := range sheeps {
		waitRunning(t, s)
	}
	waitRecovered(t, sheeps, "0015d167", 3)
	for _, s := range sheeps {
		mustRead(t, s, "Alice", want, "after the heal")
		if strings.Contains(s.must(t, nil, "vdi", "list", "-r"), "Bob") {
			t.Fatalf("%s lists the VDI the minority was refused", s.Addr())
		}
	}
}

var nodeAddr = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// epochAddrs returns s's epoch log, oldest first, as each epoch's node
// addresses, sorted.
func epochAddrs(t *testing.T, s *Sheep) [][]string {
	t.Helper()
	var rows [][]string
	for _, line := range strings.Split(s.must(t, nil, "cluster", "info", "-r"), "\n") {
		m := epochLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		addrs := nodeAddr.FindAllString(m[2], -1)
		slices.Sort(addrs)
		rows = append(rows, addrs)
	}
	slices.Reverse(rows)
	return rows
}

// waitEpochNodesNS waits until s's current epoch has exactly the nodes of
// want (netLab sheeps, told apart by address).
func waitEpochNodesNS(t *testing.T, s *Sheep, want []*Sheep, within time.Duration) {
	t.Helper()
	var addrs []string
	for _, w := range want {
		addrs = append(addrs, w.Addr())
	}
	slices.Sort(addrs)
	deadline := time.Now().Add(within)
	for {
		rows := epochAddrs(t, s)
		if len(rows) > 0 && slices.Equal(rows[len(rows)-1], addrs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: epochs %v, want a last epoch of %v", s.Addr(), rows, addrs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
