package tests

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSheepArgv starts a foreground sheep with exactly argv (the test
// places -f, the dir and every flag itself), waits until it serves, and
// kills it at cleanup.
func startSheepArgv(t *testing.T, port int, dir string, argv ...string) *Sheep {
	t.Helper()
	s := launchSheepArgv(t, port, dir, argv...)
	waitServing(t, s.Addr(), s.isDead, s.out)
	return s
}

// launchSheepArgv starts a foreground sheep with exactly argv and kills it
// at cleanup, without waiting for it to serve.
func launchSheepArgv(t *testing.T, port int, dir string, argv ...string) *Sheep {
	t.Helper()
	s := &Sheep{t: t, Dir: dir, Port: port, out: &bytes.Buffer{}}
	s.cmd = exec.Command(bin("sheep"), argv...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func(c *exec.Cmd) { c.Wait(); close(exited) }(s.cmd)
	t.Cleanup(s.Kill)
	return s
}

// waitServing waits until the sheep at addr answers a request.
func waitServing(t *testing.T, addr string, dead func() bool, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ping(addr)
		if err == nil {
			return
		}
		if dead() || time.Now().After(deadline) {
			t.Fatalf("sheep on %s did not come up: %v\n%s", addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file holds %q", b)
	}
	return pid
}

// Sheepdog 1.0's command line: flags after the dir, in any order, grouped;
// -c local nodes find each other with no --join; -P writes the pid and
// removes it at exit; the journal and other options without meaning are
// accepted with a warning; sheep.log has the "daemon" line Sheepdog's
// functional suite waits for.
func TestSheepdogCommandLineLocalCluster(t *testing.T) {
	parallel(t)
	reg := t.TempDir()
	tmp := t.TempDir()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	dir := func(i int) string { return filepath.Join(tmp, strconv.Itoa(i)) }
	pidf := func(i int) string { return filepath.Join(tmp, "pid"+strconv.Itoa(i)) }
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	sheeps := []*Sheep{
		// The form: everything after the dir.
		startSheepArgv(t, ports[0], dir(0), dir(0), "-p", p(0), "-z", "1", "-c", "local:"+reg, "-n", "-y", "127.0.0.1",
			"-P", pidf(0), "-b", "127.0.0.1", "--nbd", "none", "-f", "-j", "dir="+tmp+",size=1G", "-D", "-w", "io=4"),
		// Flags on both sides, the driver first.
		startSheepArgv(t, ports[1], dir(1), "-c", "local:"+reg, "-P", pidf(1), dir(1), "-y", "127.0.0.1", "-b", "127.0.0.1",
			"--nbd", "none", "-z", "2", "-p", p(1), "-fn"),
		// getopt's groups and attached values.
		startSheepArgv(t, ports[2], dir(2), "-fnp"+p(2), "-z3", dir(2), "-c", "local:"+reg, "-b", "127.0.0.1", "--nbd=none", "-P", pidf(2)),
	}
	for i, s := range sheeps {
		waitNodes(t, s, 3)
		if pid := readPid(t, pidf(i)); pid != s.cmd.Process.Pid {
			t.Errorf("sheep %d: pid file holds %d, the process is %d", i, pid, s.cmd.Process.Pid)
		}
		log, _ := os.ReadFile(filepath.Join(dir(i), "sheep.log"))
		if !strings.Contains(string(log), "daemon") {
			t.Errorf("sheep %d: sheep.log has no line with \"daemon\"", i)
		}
	}
	list := sheeps[0].must(t, nil, "node", "list")
	for i := range sheeps {
		if !strings.Contains(list, "127.0.0.1:"+p(i)) {
			t.Errorf("node list lacks node %d:\n%s", i, list)
		}
	}
	for _, z := range []string{" 1\n", " 2\n", " 3\n"} {
		if !strings.Contains(list, z) {
			t.Errorf("node list lacks zone%s%s", z, list)
		}
	}
	log0, _ := os.ReadFile(filepath.Join(dir(0), "sheep.log"))
	if !strings.Contains(string(log0), "no meaning") || strings.Contains(string(log0), "-D/--directio") ||
		!strings.Contains(string(log0), "-j (journal)") || !strings.Contains(string(log0), "-w/--wq-threads") {
		t.Errorf("no warning naming the ignored options (and only those) in sheep.log:\n%s", log0)
	}
	if !strings.Contains(string(log0), "store writes with direct IO (-D)") {
		t.Errorf("sheep 0 does not say it writes with direct IO (-D):\n%s", log0)
	}

	// One cluster: format with three copies and read back through another node.
	sheeps[0].must(t, nil, "cluster", "format", "-c", "3")
	data := seedVdi(t, sheeps[1], "dropin", 1<<20)
	mustRead(t, sheeps[2], "dropin", data, "in a -c local cluster")

	// A killed sheep leaves its registry entry (the next sheep ignores
	// and removes it); a stopped one removes its pid file and its entry.
	// Killed first, while two of three voters remain: a kill -9 of the
	// one voter of a two-node cluster leaves the other without a
	// majority (raft), where a clean stop hands the vote over.
	sheeps[1].Kill()
	waitNodes(t, sheeps[0], 2)
	sheeps[2].Stop()
	if _, err := os.Stat(pidf(2)); !os.IsNotExist(err) {
		t.Errorf("pid file left after a clean stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(reg, "sheep-127.0.0.1:"+p(2))); !os.IsNotExist(err) {
		t.Errorf("registry entry left after a clean stop: %v", err)
	}
	waitNodes(t, sheeps[0], 1)
	again := startSheepArgv(t, ports[2], dir(2), dir(2), "-f", "-n", "-c", "local:"+reg, "-b", "127.0.0.1", "--nbd", "none", "-p", p(2), "-z", "3")
	waitNodes(t, again, 2)
	if _, err := os.Stat(filepath.Join(reg, "sheep-127.0.0.1:"+p(1))); !os.IsNotExist(err) {
		t.Errorf("a dead sheep's registry entry survived the next start: %v", err)
	}
	mustRead(t, again, "dropin", data, "after a -c local node restarted")
}

// Invalid -p, -z, -V and -c are refused with Sheepdog's messages, before
// detaching, and exit 1.
func TestSheepdogOptionErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "0"}, "Invalid port number '0'"},
		{[]string{"-p", "65536"}, "Invalid port number '65536'"},
		{[]string{"-p", "4294967297"}, "Invalid port number '4294967297'"},
		{[]string{"-p", "-1"}, "Invalid port number '-1'"},
		{[]string{"-p", "42a"}, "Invalid port number '42a'"},
		{[]string{"-p", "-"}, "Invalid port number '-'"},
		{[]string{"-z", "4294967296"}, "Invalid zone id '4294967296': must be an integer between 0 and 4294967295"},
		{[]string{"-z", "9223372036854775808"}, "Invalid zone id '9223372036854775808': must be an integer between 0 and 4294967295"},
		{[]string{"-z", "-1"}, "Invalid zone id '-1': must be an integer between 0 and 4294967295"},
		{[]string{"-z", "+"}, "Invalid zone id '+': must be an integer between 0 and 4294967295"},
		{[]string{"-V", "0"}, "Invalid number of vnodes '0': must be an integer between 1 and 65535"},
		{[]string{"-V", "65536"}, "Invalid number of vnodes '65536': must be an integer between 1 and 65535"},
		{[]string{"-V", "a"}, "Invalid number of vnodes 'a': must be an integer between 1 and 65535"},
		{[]string{"-g", "-V", "42"}, "Options '-g' and '-V' can not be both specified"},
		{[]string{"-V", "42", "-g"}, "Options '-g' and '-V' can not be both specified"},
		{[]string{"-y", "host.example"}, "Invalid address: 'host.example'"},
		{[]string{"-R", "max=fast"}, "Invalid recovery option 'max=fast'"},
		{[]string{"-c", "corosync"}, "Invalid cluster driver 'corosync'"},
		{[]string{"-c", "zookeeper:127.0.0.1:2181"}, "Invalid cluster driver 'zookeeper:127.0.0.1:2181'"},
	} {
		// Without -f: the refusal comes before detaching.
		r := run(t, nil, bin("sheep"), append([]string{dir}, tc.args...)...)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, tc.want) {
			t.Errorf("sheep DIR %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(tc.args, " "), r.Code, r.Stderr, tc.want)
		}
	}
	if r := run(t, nil, bin("sheep"), dir, "-v"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "Sheepdog daemon version ") {
		t.Errorf("sheep -v: exit %d, %q", r.Code, r.Stdout)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused starts left files in the store dir: %v", ents)
	}
}

// portFree reports whether TCP port p (and UDP, if udp) is free on loopback.
func portFree(p int, udp bool) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	defer l.Close()
	if udp {
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// Port 65535 works: its gossip and raft ports default to 55535 and 45535
// (port minus the offsets). The sheep detaches as Sheepdog's does and
// writes its pid file; it joins, and another node joins it with --join
// (the joiner derives its gossip port). A node with --gossip-port and
// --raft-port of its own joins too.
func TestSheepPort65535(t *testing.T) {
	if !portFree(65535, false) || !portFree(55535, true) || !portFree(45535, false) {
		t.Skip("port 65535, 55535 or 45535 in use on this host")
	}
	tmp := t.TempDir()
	a := startSheep(t)
	dirB, pidB := filepath.Join(tmp, "b"), filepath.Join(tmp, "b.pid")
	r := run(t, nil, bin("sheep"), dirB, "-p", "65535", "-b", "127.0.0.1", "--nbd", "none", "-n", "-z", "2", "-P", pidB, "--join", a.Addr())
	if r.Code != 0 {
		t.Fatalf("sheep -p 65535: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	pid := readPid(t, pidB)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	b := &Sheep{t: t, Dir: dirB, Port: 65535}
	waitNodes(t, a, 2)
	waitNodes(t, b, 2)
	for _, q := range []int{55535, 45535} {
		if portFree(q, false) {
			t.Errorf("nothing listens on the derived port %d", q)
		}
	}

	// A third node joins the 65535 one: its seed's gossip port is derived.
	c := startSheep(t, "-n", "-z", "3", "--join", b.Addr())
	waitNodes(t, c, 3)
	// A fourth with ports of its own (below the ephemeral range).
	gp, rp := freePort(t), freePort(t)
	d := startSheep(t, "-n", "-z", "4", "--join", a.Addr(), "--gossip-port", strconv.Itoa(gp), "--raft-port", strconv.Itoa(rp))
	waitNodes(t, a, 4)
	if portFree(gp, false) || portFree(rp, false) {
		t.Errorf("--gossip-port %d / --raft-port %d not listened on", gp, rp)
	}

	a.must(t, nil, "cluster", "format", "-c", "2")
	data := seedVdi(t, b, "high", 1<<20)
	mustRead(t, d, "high", data, "written through port 65535")

	// SIGTERM: the detached sheep stops and removes its pid file.
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(15 * time.Second)
	for pidRuns(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pidRuns(pid) {
		t.Fatal("sheep on 65535 still runs 15 s after SIGTERM")
	}
	if _, err := os.Stat(pidB); !os.IsNotExist(err) {
		t.Errorf("pid file left after SIGTERM: %v", err)
	}
	waitNodes(t, a, 3)
}

// pidRuns reports whether process pid exists and is not a zombie (a
// detached sheep's parent is whoever reaps orphans here, maybe late).
func pidRuns(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// clusterEpochs returns `cluster info -v`'s epoch lines.
func clusterEpochs(t *testing.T, s *Sheep) []string {
	t.Helper()
	out := s.must(t, nil, "cluster", "info", "-v")
	_, epochs, _ := strings.Cut(out, "Epoch Time")
	lines := strings.Split(strings.TrimSpace(epochs), "\n")
	return lines[1:]
}

// `node vnodes set N` (SET_VNODES) in a cluster with fixed vnodes makes a
// new epoch with the node's new count, and objects move by it; bad counts,
// automatic vnodes and a gateway are refused with dog's messages and exit
// codes.
func TestNodeVnodesSet(t *testing.T) {
	parallel(t)
	a := startSheep(t, "-n", "-z", "1", "-V", "100")
	b := startSheep(t, "-n", "-z", "2", "-V", "100", "--join", a.Addr())
	waitNodes(t, a, 2)
	a.must(t, nil, "cluster", "format", "-V", "-c", "1")
	data := seedVdi(t, a, "moving", 32<<20) // 8 data objects, spread over a and b
	before := len(clusterEpochs(t, a))

	for _, bad := range []string{"0", "65536", "4294967297", "-1", "a", "42a", "+", "-"} {
		r := b.collie(t, nil, "node", "vnodes", "set", "--", bad)
		want := "Invalid number of vnodes '" + bad + "': must be an integer between 1 and 65535\n"
		if r.Code != 64 || r.Stderr != want {
			t.Errorf("vnodes set %s: exit %d, stderr %q; want 64, %q", bad, r.Code, r.Stderr, want)
		}
	}

	b.must(t, nil, "node", "vnodes", "set", "1")
	a.must(t, nil, "node", "vnodes", "set", "65535")
	deadline := time.Now().Add(30 * time.Second)
	for {
		e := clusterEpochs(t, b)
		// Nodes are listed by address: the one with 1 vnode may come
		// first or last.
		one := strings.Contains(e[0], ":1]") || strings.Contains(e[0], ":1,")
		if len(e) == before+2 && strings.Contains(e[0], ":65535") && one {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no epochs with the new vnode counts (had %d): %q", before, e)
		}
		time.Sleep(200 * time.Millisecond)
	}
	list := a.must(t, nil, "node", "list")
	if !strings.Contains(list, "65535") || !strings.Contains(list, "\t 1 ") && !strings.Contains(list, " 1 ") {
		t.Errorf("node list does not show the new counts:\n%s", list)
	}
	// With 65535 vnodes against 1, a's share of the ring is all but
	// everything: recovery brings every data object to a.
	deadline = time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, c := range objectCopies(t, []*Sheep{a}, "00") {
			n += c
		}
		if n == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a holds %d of 8 data objects after its vnodes grew", n)
		}
		time.Sleep(300 * time.Millisecond)
	}
	mustRead(t, b, "moving", data, "after vnodes set")

	// A gateway has no vnodes to set.
	g := startSheep(t, "-n", "-z", "3", "-g", "--join", a.Addr())
	waitNodes(t, a, 3)
	if r := g.collie(t, nil, "node", "vnodes", "set", "42"); r.Code != 255 || r.Stderr != "Failed to execute request\n" {
		t.Errorf("vnodes set on a gateway: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// A cluster with automatic vnodes refuses it.
	auto := startSheep(t, "-n")
	auto.must(t, nil, "cluster", "format", "-c", "1")
	if r := auto.collie(t, nil, "node", "vnodes", "set", "42"); r.Code != 255 || r.Stderr != "Failed to execute request\n" {
		t.Errorf("vnodes set with auto vnodes: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

// -R max=N,interval=MS sets the recovery throttle, as `node recovery
// set-throttle` does.
func TestSheepRecoveryThrottleOption(t *testing.T) {
	s := startSheep(t, "-n", "-R", "max=50,interval=1000")
	if got := s.must(t, nil, "node", "recovery", "get-throttle"); got != "max (50), interval (1000)\n" {
		t.Errorf("get-throttle after -R max=50,interval=1000: %q", got)
	}
	u := startSheep(t, "-n")
	if got := u.must(t, nil, "node", "recovery", "get-throttle"); got != "max (0), interval (0)\n" {
		t.Errorf("get-throttle without -R: %q", got)
	}
}

// Sheeps started with -c local at the same moment form one cluster: the
// registry is read and written under a lock, so exactly one of them finds
// nobody and bootstraps.
func TestLocalDriverConcurrentStart(t *testing.T) {
	reg, tmp := t.TempDir(), t.TempDir()
	var sheeps []*Sheep
	for i := 0; i < 3; i++ {
		port := freePort(t)
		dir := filepath.Join(tmp, strconv.Itoa(i))
		sheeps = append(sheeps, launchSheepArgv(t, port, dir, dir, "-f", "-n", "-c", "local:"+reg, "-b", "127.0.0.1",
			"--nbd", "none", "-p", strconv.Itoa(port), "-z", strconv.Itoa(i)))
	}
	for _, s := range sheeps {
		waitServing(t, s.Addr(), s.isDead, s.out)
	}
	for _, s := range sheeps {
		waitNodes(t, s, 3)
	}
	boots := 0
	for _, s := range sheeps {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
		boots += strings.Count(string(log), "bootstrapped a new cluster")
	}
	if boots != 1 {
		t.Errorf("%d sheeps bootstrapped a cluster, want 1", boots)
	}
}

// localDriverSheeps returns a start function for sheeps of one -c local
// registry (a fresh one), each in a dir of its name under a fresh temp dir,
// zone its name.
func localDriverSheeps(t *testing.T) func(name string, port int) *Sheep {
	reg, tmp := t.TempDir(), t.TempDir()
	return func(name string, port int) *Sheep {
		dir := filepath.Join(tmp, name)
		return startSheepArgv(t, port, dir, dir, "-f", "-n", "-c", "local:"+reg, "-b", "127.0.0.1", "--nbd", "none",
			"-p", strconv.Itoa(port), "-z", name)
	}
}

// Two -c local sheeps have one raft voter, the first. Killed with
// SIGKILL, it leaves the other without a majority; as Sheepdog's local
// driver, the survivor carries on by itself: the registry says the
// voter's process is gone, so it re-forms the cluster (a new epoch of
// itself alone) and takes writes with no command typed. Then the survivor
// is killed too, and both restart, the old voter first: it waits for the
// other node of its last epoch, and once that one is back the newer
// history (the survivor's) wins, as Sheepdog's latest epoch does: epochs
// [a b], [b], [a b], the write made after the first kill readable.
func TestLocalDriverVoterKilled(t *testing.T) {
	parallel(t)
	start := localDriverSheeps(t)
	pa, pb := freePort(t), freePort(t)
	a := start("1", pa) // finds nobody: bootstraps, the one voter
	b := start("2", pb)
	waitNodes(t, b, 2)
	a.must(t, nil, "cluster", "format", "--copies=2")
	data := seedVdi(t, b, "Alice", 4<<20)
	before := len(epochLog(t, b))

	killed := time.Now()
	a.Kill()
	waitEpochNodes(t, b, []*Sheep{b}, 20*time.Second)
	patchVdi(t, b, "Alice", data, 1<<20, 0x5a) // a write needs a leader
	t.Logf("survivor wrote %v after the voter was killed", time.Since(killed).Round(time.Millisecond))
	if got := len(epochLog(t, b)); got != before+1 {
		t.Errorf("%d epochs after the kill, want %d (one: the voter gone)", got, before+1)
	}
	log, _ := os.ReadFile(filepath.Join(b.Dir, "sheep.log"))
	if !strings.Contains(string(log), "every missing voter is dead") {
		t.Errorf("the survivor's log does not say why it re-formed the cluster")
	}
	mustRead(t, b, "Alice", data, "after the voter was killed")

	b.Kill()
	a = start("1", pa)
	// Waiting for b, the node list is the nodes that have joined so far
	// (Sheepdog's, which its suite counts), not the last epoch's.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(a.collie(t, nil, "cluster", "info").Stdout, "Cluster status: Waiting for other nodes to join cluster") {
		if time.Now().After(deadline) {
			t.Fatalf("the old voter restarted alone does not wait for the other node: %q", a.collie(t, nil, "cluster", "info").Stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if list := a.must(t, nil, "node", "list", "-r"); strings.Count(list, "\n") != 1 {
		t.Errorf("node list while waiting for the other node: %q, want this node only", list)
	}
	b = start("2", pb)
	waitEpochNodes(t, b, []*Sheep{a, b}, 20*time.Second)
	both := []int{min(pa, pb), max(pa, pb)}
	want := []epochRow{{1, both}, {2, []int{pb}}, {3, both}}
	for _, s := range []*Sheep{a, b} {
		waitEpochNodes(t, s, []*Sheep{a, b}, 10*time.Second)
		if got := epochLog(t, s); fmt.Sprint(got[len(got)-3:]) != fmt.Sprint(want[:]) || len(got) != before+2 {
			t.Errorf("%s: epochs %v after both restarted, want %v", s.Addr(), got, want)
		}
	}
	mustRead(t, a, "Alice", data, "through the old voter, after both restarted")
}

// A -c local sheep started while its formatted cluster is down finds
// nobody and starts a cluster of its own, unformatted. When a node of the
// formatted cluster comes back, the new one joins that cluster instead of
// refusing it (as Sheepdog's new nodes take in the formatted cluster's
// nodes, its test 070): one epoch of both, the VDI readable through the
// new node.
func TestLocalDriverNewNodeAdoptsFormatted(t *testing.T) {
	parallel(t)
	start := localDriverSheeps(t)
	pa, pb := freePort(t), freePort(t)
	a := start("1", pa)
	a.must(t, nil, "cluster", "format", "--copies=1")
	data := seedVdi(t, a, "Alice", 4<<20)
	a.Stop()
	b := start("2", pb)
	if info := b.collie(t, nil, "cluster", "info").Stdout; !strings.Contains(info, "formatted") {
		t.Fatalf("the new node alone: %q, want a cluster waiting for its format", info)
	}
	a = start("1", pa)
	waitEpochNodes(t, a, []*Sheep{a, b}, 20*time.Second)
	waitEpochNodes(t, b, []*Sheep{a, b}, 10*time.Second)
	if got := epochLog(t, b); len(got) != 2 || len(got[0].ports) != 1 || got[0].ports[0] != pa {
		t.Errorf("epochs on the new node %v, want the formatted cluster's [a] then [a b]", got)
	}
	// Recovery moves Alice's objects to the new node meanwhile: a read
	// there right after the epoch can find one not moved yet (NO_OBJ),
	// so it retries; lost data would fail it.
	took := readWithin(t, b, "Alice", data, 20*time.Second, "through the new node")
	t.Logf("first full read through the new node %v after the epoch of both", took.Round(time.Millisecond))
}

// A -c local sheep with its own --gossip-port is found through the
// registry, which records its gossip address: the next sheep joins it.
func TestLocalDriverOwnGossipPort(t *testing.T) {
	reg, tmp := t.TempDir(), t.TempDir()
	pa, pb, gp := freePort(t), freePort(t), freePort(t)
	da, db := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	a := startSheepArgv(t, pa, da, da, "-f", "-n", "-c", "local:"+reg, "-b", "127.0.0.1", "--nbd", "none", "-p", strconv.Itoa(pa),
		"-z", "1", "--gossip-port", strconv.Itoa(gp))
	b := startSheepArgv(t, pb, db, db, "-f", "-n", "-c", "local:"+reg, "-b", "127.0.0.1", "--nbd", "none", "-p", strconv.Itoa(pb), "-z", "2")
	waitNodes(t, a, 2)
	waitNodes(t, b, 2)
}

// node recovery set-throttle/get-throttle as Sheepdog's test 107: dog's
// checks and messages, and the largest interval (2^63-1 ms) reported back
// as set, not as 2^64-1.
func TestRecoveryThrottleAsDog(t *testing.T) {
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "--copies=1")
	for _, tc := range []struct{ max, interval, err string }{
		{"0", "1", "Invalid interval max (0), interval (1)"},
		{"0", "-1", "Invalid interval (-1)"},
		{"1", "0", "Invalid interval max (1), interval (0)"},
		{"-1", "0", "Invalid max (-1)"},
		{"-2", "-2", "Invalid max (-2)"},
		{"4294967295", "9223372036854775808", "Invalid interval (9223372036854775808)"},
		{"4294967296", "9223372036854775807", "Invalid max (4294967296)"},
	} {
		r := run(t, nil, bin("collie"), "node", "recovery", "set-throttle", "-p", strconv.Itoa(s.Port), "--", tc.max, tc.interval)
		if r.Code != 64 || r.Stderr != tc.err+"\n" {
			t.Errorf("set-throttle %s %s: exit %d, %q; want 64, %q", tc.max, tc.interval, r.Code, r.Stderr, tc.err)
		}
		if got := s.must(t, nil, "node", "recovery", "get-throttle"); got != "max (0), interval (0)\n" {
			t.Errorf("after a refused set: %q", got)
		}
	}
	for _, tc := range [][2]string{{"0", "0"}, {"1", "1"}, {"4294967295", "9223372036854775807"}} {
		if r := run(t, nil, bin("collie"), "node", "recovery", "set-throttle", "-p", strconv.Itoa(s.Port), "--", tc[0], tc[1]); r.Code != 0 {
			t.Fatalf("set-throttle %s %s: exit %d, %s", tc[0], tc[1], r.Code, r.Stderr)
		}
		if got, want := s.must(t, nil, "node", "recovery", "get-throttle"), "max ("+tc[0]+"), interval ("+tc[1]+")\n"; got != want {
			t.Errorf("get-throttle %q, want %q", got, want)
		}
	}
}

// A new node joining a cluster whose nodes wait for the rest of the last
// epoch after a whole-cluster restart waits with them (Sheepdog's), instead
// of reporting "running"; all run once the missing node is back.
func TestNewNodeWaitsForJoinWithCluster(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	for _, s := range sheeps {
		s.Kill()
	}
	sheeps[0].start("-z", "0")
	fresh := startSheep(t, "-z", "2", "--join", sheeps[0].Addr())
	waiting := func(s *Sheep) bool {
		return strings.HasPrefix(s.collie(t, nil, "cluster", "info").Stdout, "Cluster status: Waiting for other nodes to join cluster")
	}
	deadline := time.Now().Add(20 * time.Second)
	for !waiting(sheeps[0]) || !waiting(fresh) {
		if time.Now().After(deadline) {
			t.Fatalf("while a node of the last epoch is missing: restarted node %q, new node %q",
				sheeps[0].collie(t, nil, "cluster", "info").Stdout, fresh.collie(t, nil, "cluster", "info").Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Still waiting a moment later: not a passing state.
	time.Sleep(2 * time.Second)
	if !waiting(fresh) {
		t.Fatalf("new node stopped waiting while a node is missing: %q", fresh.collie(t, nil, "cluster", "info").Stdout)
	}
	sheeps[1].start("-z", "1", "--join", sheeps[0].Addr())
	for _, s := range []*Sheep{sheeps[0], sheeps[1], fresh} {
		waitRunning(t, s)
	}
}

// A detached sheep whose store belongs to another cluster than the one it
// joins does as Sheepdog's: the start command succeeds (the daemon has
// detached), the daemon logs the refusal in sheep.log and leaves, and the
// cluster it tried to join is unchanged.
func TestDetachedJoinRefusedLogsAndLeaves(t *testing.T) {
	a := startSheep(t, "-z", "0")
	a.must(t, nil, "cluster", "format", "--copies=1")
	b := startSheep(t, "-z", "1")
	b.must(t, nil, "cluster", "format", "--copies=1")
	b.Stop()
	pidFile := filepath.Join(t.TempDir(), "sheep.pid")
	r := run(t, nil, bin("sheep"), b.Dir, "-b", "127.0.0.1", "--nbd", "none", "-p", strconv.Itoa(b.Port), "-z", "1", "--join", a.Addr(), "-P", pidFile)
	if r.Code != 0 {
		t.Fatalf("detached start of a node that is refused: exit %d, %s", r.Code, r.Stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, _ := os.ReadFile(filepath.Join(b.Dir, "sheep.log"))
		if bytes.Contains(log, []byte("join refused: leaving")) && bytes.Contains(log, []byte("refusing to join")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal in sheep.log:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for time.Now().Before(deadline) && portsFree(b.Port) == false {
		time.Sleep(100 * time.Millisecond)
	}
	if ping(b.Addr()) == nil {
		t.Fatal("the refused sheep still serves")
	}
	if list := a.must(t, nil, "node", "list", "-r"); strings.Count(list, "\n") != 1 {
		t.Fatalf("node list of the first cluster: %q", list)
	}
}
