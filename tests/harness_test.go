// Package tests holds end-to-end tests: they build the real binaries, start
// real sheep processes on loopback ports and drive them with real clients.
package tests

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the binaries built once for the whole run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sheepdog-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freePort returns a protocol port P such that P, P+10000 (gossip, TCP and
// UDP) and P+20000 (raft) are free right now. Ports are drawn from
// 11000–12767 so the derived ones stay below the ephemeral range (32768
// up): a peer dialling a dead sheep's port in that range can connect to
// itself and hold the port when the sheep restarts.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 1000; i++ {
		p := 11000 + portRand.Intn(32768-20000-11000)
		if inLane(p) && !portTaken[p] && portsFree(p) {
			portTaken[p] = true
			return p
		}
	}
	t.Fatal("no free port triple found")
	return 0
}

// Tests run in parallel (see parallel): a port handed out once is never
// handed out again in this process, since its sheep may not have bound
// it yet, or may be down for a restart on the same port.
var (
	portMu    sync.Mutex
	portTaken = map[int]bool{}
)

var portRand = mrand.New(mrand.NewSource(time.Now().UnixNano() + int64(os.Getpid())))

// portLane, from SHEEPDOG_PORT_LANE=I/N, is this process's share of the
// ports when N test processes run at once (make e2e runs two lanes):
// it takes only ports P with P%N == I, so two processes never hand out
// the same port (portTaken is per process). Unset: every port.
var portLane, portLanes = func() (i, n int) {
	if _, err := fmt.Sscanf(os.Getenv("SHEEPDOG_PORT_LANE"), "%d/%d", &i, &n); err != nil || n < 1 || i < 0 || i >= n {
		return 0, 1
	}
	return i, n
}()

func inLane(p int) bool { return p%portLanes == portLane }

func portsFree(p int) bool {
	var ls []io.Closer
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, q := range []int{p, p + 10000, p + 20000} {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+10000))
	if err != nil {
		return false
	}
	ls = append(ls, u)
	return true
}

// Sheep is one running sheep process.
type Sheep struct {
	t      testing.TB
	Dir    string
	Port   int
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{} // closed when the process has been reaped

	// Host and NS, when set, run the sheep in network namespace NS bound
	// to Host (netns_test.go) instead of on loopback.
	Host, NS string
	// Disks, when set, are the sheep's object disks: DIR,DISK1,DISK2...
	// (md_test.go).
	Disks []string
}

// Addr is the sheep's protocol address.
func (s *Sheep) Addr() string { return net.JoinHostPort(s.host(), strconv.Itoa(s.Port)) }

func (s *Sheep) host() string {
	if s.Host != "" {
		return s.Host
	}
	return "127.0.0.1"
}

// startSheep starts a foreground sheep on a free loopback port with a fresh
// store dir, waits until it accepts connections, and stops it at cleanup.
func startSheep(t testing.TB, extra ...string) *Sheep {
	t.Helper()
	s := &Sheep{t: t, Dir: t.TempDir(), Port: freePort(t)}
	if strings.Contains(s.Dir, ",") {
		// sheep DIR,DISK... splits the argument at commas.
		t.Fatalf("store dir %s has a comma (from the test's name)", s.Dir)
	}
	s.start(extra...)
	return s
}

func (s *Sheep) start(extra ...string) {
	t := s.t
	t.Helper()
	args := []string{"-f", "-b", s.host(), "-p", strconv.Itoa(s.Port)}
	if !slices.Contains(extra, "--nbd") {
		args = append(args, "--nbd", "none") // tests that want NBD pass their own address
	}
	if key := os.Getenv("SHEEPDOG_CLUSTER_KEY"); key != "" && !slices.Contains(extra, "--cluster-key") {
		args = append(args, "--cluster-key", key) // make e2e-key: the suites on keyed clusters
	}
	args = append(args, extra...)
	args = append(args, strings.Join(append([]string{s.Dir}, s.Disks...), ","))
	s.out = &bytes.Buffer{}
	s.cmd = exec.Command(bin("sheep"), args...)
	if s.NS != "" {
		s.cmd = exec.Command("ip", append([]string{"netns", "exec", s.NS, bin("sheep")}, args...)...)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func(c *exec.Cmd) { c.Wait(); close(exited) }(s.cmd)
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
			if dir := os.Getenv("SHEEPDOG_KEEP_LOGS"); dir != "" {
				// The whole log of a failed test, for reading later.
				name := strings.NewReplacer("/", "_", ":", "_").Replace(t.Name() + "-" + s.Addr())
				os.WriteFile(filepath.Join(dir, name+".log"), log, 0o644)
			}
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			// The sheep's own lines: raft and memberlist retry loudly
			// when a peer is gone and would hide them.
			var own []string
			for _, l := range lines {
				if !strings.Contains(l, "lib=raft") && !strings.Contains(l, "lib=memberlist") {
					own = append(own, l)
				}
			}
			t.Logf("sheep %s log (last lines):\n%s\nits own last lines:\n%s", s.Addr(),
				strings.Join(lines[max(0, len(lines)-15):], "\n"), strings.Join(own[max(0, len(own)-15):], "\n"))
		}
	})
	// Serving means answering a request, not just accepting connections
	// (the listener opens before the sheep has joined its cluster).
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ping(s.Addr())
		if err == nil {
			return
		}
		if s.isDead() || time.Now().After(deadline) {
			t.Fatalf("sheep on %s did not come up: %v\n%s", s.Addr(), err, s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ping sends GET_NODE_LIST and waits for the reply header.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	req := make([]byte, 48)
	req[0], req[1] = 0x0a, 0x82
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err = io.ReadFull(c, req)
	return err
}

func (s *Sheep) isDead() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Kill stops the sheep with SIGKILL (idempotent).
func (s *Sheep) Kill() {
	if s.cmd != nil && !s.isDead() {
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// Stop stops the sheep with SIGINT (Ctrl-C; TestSheepSigterm covers
// SIGTERM) and waits, killing it after 10 s.
func (s *Sheep) Stop() {
	if s.cmd != nil && !s.isDead() {
		s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
}

// Result is what a command printed and how it exited.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// String is how a Result prints in a failure message: output quoted and
// cut short, so that a read's raw bytes cannot garble the log.
func (r Result) String() string {
	cut := func(s string) string {
		if len(s) > 200 {
			return fmt.Sprintf("%q... (%d bytes)", s[:200], len(s))
		}
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("exit %d, stdout %s, stderr %s", r.Code, cut(r.Stdout), cut(r.Stderr))
}

// collie runs the collie binary against s with args.
func (s *Sheep) collie(t testing.TB, stdin []byte, args ...string) Result {
	t.Helper()
	if s.Host != "" {
		args = append(args, "-a", s.Host)
	}
	return run(t, stdin, bin("collie"), append(args, "-p", strconv.Itoa(s.Port))...)
}

// run runs name with args (2 minutes at most; a command still running
// then is killed and reported with exit code -1).
func run(t testing.TB, stdin []byte, name string, args ...string) Result {
	t.Helper()
	return runTimeout(t, stdin, 2*time.Minute, name, args...)
}

// runTimeout is run with a timeout: a command still running then is
// killed and reported with exit code -1.
func runTimeout(t testing.TB, stdin []byte, timeout time.Duration, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	r := Result{Stdout: so.String(), Stderr: se.String()}
	if ctx.Err() != nil {
		r.Code = -1
	} else if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// must runs collie and fails the test unless it exits 0.
func (s *Sheep) must(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	r := s.collie(t, stdin, args...)
	if r.Code != 0 {
		t.Fatalf("collie %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// waitRunning waits until s reports "Cluster status: running" (a restarted
// sheep replays its cluster log first).
func waitRunning(t testing.TB, s *Sheep) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := s.collie(t, nil, "cluster", "info")
		if r.Code == 0 && strings.HasPrefix(r.Stdout, "Cluster status: running") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running: %s %s", s.Addr(), r.Stdout, r.Stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// seedVdi creates VDI name of size bytes through s, fills it with random
// bytes and returns them.
func seedVdi(t testing.TB, s *Sheep, name string, size int) []byte {
	t.Helper()
	s.must(t, nil, "vdi", "create", name, strconv.Itoa(size))
	data := make([]byte, size)
	crand.Read(data)
	s.must(t, data, "vdi", "write", name, "0", strconv.Itoa(size))
	return data
}

// mustRead fails the test unless the whole of VDI name, read through s,
// equals want.
func mustRead(t testing.TB, s *Sheep, name string, want []byte, when string) {
	t.Helper()
	got := s.must(t, nil, "vdi", "read", name, "0", strconv.Itoa(len(want)))
	if !bytes.Equal([]byte(got), want) {
		t.Fatalf("%s read through %s differs %s", name, s.Addr(), when)
	}
}

// skipUnlessRequired skips t for a missing prerequisite (a tool, FUSE,
// root), or fails it when SHEEPDOG_REQUIRE_ALL=1, as .ci/run sets: CI
// installs everything, so a skip there would hide a test that never ran.
func skipUnlessRequired(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("SHEEPDOG_REQUIRE_ALL") == "1" {
		t.Fatalf("required by SHEEPDOG_REQUIRE_ALL=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// parallel marks a test that starts its own sheeps and waits mostly on
// their timers (failure detection, elections, recovery runs) as one
// that may run beside others: `go test -parallel N` then overlaps those
// waits. SHEEPDOG_SERIAL=1 runs everything one test at a time, for a
// timing under a quiet machine or when chasing a flaky test.
func parallel(t *testing.T) {
	if os.Getenv("SHEEPDOG_SERIAL") == "" {
		t.Parallel()
	}
}
