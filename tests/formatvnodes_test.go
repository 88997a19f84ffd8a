package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cluster format agrees with the nodes' vnode strategy as dog's does: a
// sheep started with -V (fixed vnodes) is formatted only with -V, one
// started without only without it, before and after a first format.
func TestFormatFollowsVnodeStrategy(t *testing.T) {
	parallel(t)
	const needV = "Need to specify the option of '-V', because there are vnode strategy of sheep is fixed in the cluster"
	const noV = "Can not apply the option of '-V', because there are vnode strategy of sheep is auto in the cluster"
	expect := func(s *Sheep, want string, args ...string) {
		t.Helper()
		r := s.collie(t, nil, append([]string{"cluster", "format", "-c", "1"}, args...)...)
		if r.Code != 1 || !strings.Contains(r.Stderr, want) {
			t.Fatalf("format %v on %s: exit %d, stderr %q; want 1 and %q", args, s.Addr(), r.Code, r.Stderr, want)
		}
	}
	fixed := startSheep(t, "-n", "-V", "100")
	expect(fixed, needV)
	fixed.must(t, nil, "cluster", "format", "-V", "-c", "1")
	expect(fixed, needV)

	auto := startSheep(t, "-n")
	expect(auto, noV, "-V")
	auto.must(t, nil, "cluster", "format", "-c", "1")
	expect(auto, noV, "-V")
}

// A sheep whose vnode strategy is not its formatted cluster's (started
// with -V in a cluster of automatic vnodes, or without it in one of fixed
// vnodes) joins, finds out, logs why and leaves, as Sheepdog's does: its
// process ends with an error and the cluster makes an epoch without it.
func TestJoinRefusedForVnodeStrategy(t *testing.T) {
	parallel(t)
	for _, c := range []struct {
		name            string
		member, joiner  []string
		format, message string
	}{
		{"auto cluster with a fixed joiner", nil, []string{"-V", "400"}, "", "cluster:auto, joined:fixed"},
		{"fixed cluster with an auto joiner", []string{"-V", "100"}, nil, "-V", "cluster:fixed, joined:auto"},
	} {
		t.Run(c.name, func(t *testing.T) {
			parallel(t)
			a := startSheep(t, append([]string{"-n", "-z", "0"}, c.member...)...)
			args := []string{"cluster", "format", "-c", "1"}
			if c.format != "" {
				args = append(args, c.format)
			}
			a.must(t, nil, args...)
			port := freePort(t)
			dir := t.TempDir()
			argv := append([]string{"-f", "-n", "-b", "127.0.0.1", "-p", strconv.Itoa(port), "--nbd", "none", "-z", "1", "--join", a.Addr()}, c.joiner...)
			b := launchSheepArgv(t, port, dir, append(argv, dir)...)
			select {
			case <-b.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("the sheep of the other strategy still runs\n%s", b.out)
			}
			if b.cmd.ProcessState.ExitCode() == 0 {
				t.Errorf("it exited 0, want an error\n%s", b.out)
			}
			log, _ := os.ReadFile(filepath.Join(dir, "sheep.log"))
			if !strings.Contains(string(log), c.message) {
				t.Errorf("sheep.log does not say %q", c.message)
			}
			waitNodes(t, a, 1)
			epochs := clusterEpochs(t, a)
			if len(epochs) < 3 || !strings.Contains(epochs[1], "127.0.0.1:"+strconv.Itoa(port)) || strings.Contains(epochs[0], "127.0.0.1:"+strconv.Itoa(port)) {
				t.Errorf("epochs %q: want the joiner in one epoch and gone in the next", epochs)
			}
		})
	}
}

// A sheep restarted on its formatted store with the other vnode strategy
// (here without the -V it was formatted with) says why and stops, as
// Sheepdog's does at start.
func TestRestartRefusedForVnodeStrategy(t *testing.T) {
	parallel(t)
	a := startSheep(t, "-n", "-V", "100")
	a.must(t, nil, "cluster", "format", "-V", "-c", "1")
	a.Stop()
	b := launchSheepArgv(t, a.Port, a.Dir, "-f", "-n", "-b", "127.0.0.1", "-p", strconv.Itoa(a.Port), "--nbd", "none", a.Dir)
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the sheep restarted without -V still runs\n%s", b.out)
	}
	log, _ := os.ReadFile(filepath.Join(a.Dir, "sheep.log"))
	if b.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(log), "cluster:fixed, this start:auto") {
		t.Fatalf("exit %d; sheep.log:\n%s", b.cmd.ProcessState.ExitCode(), log)
	}
	// Fixed vnodes, but not the count of the last epoch.
	c := launchSheepArgv(t, a.Port, a.Dir, "-f", "-n", "-b", "127.0.0.1", "-p", strconv.Itoa(a.Port), "--nbd", "none", "-V", "42", a.Dir)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the sheep restarted with -V 42 instead of 100 still runs\n%s", c.out)
	}
	log, _ = os.ReadFile(filepath.Join(a.Dir, "sheep.log"))
	if c.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(log), "previous vnodes:100") {
		t.Fatalf("exit %d; sheep.log:\n%s", c.cmd.ProcessState.ExitCode(), log)
	}
}
