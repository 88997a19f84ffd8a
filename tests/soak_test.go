//go:build soak

package tests

import (
	"context"
	crand "crypto/rand"
	"fmt"
	mrand "math/rand"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak (make soak; SHEEPDOG_SOAK=10m by default there) runs fio with
// verification through NBD on a 3-node copies=3 cluster for the whole
// duration while a loop kills -9 and restarts node 1 or 2 and other
// goroutines open, abuse and abandon connections on every port. It
// requires zero verify errors, every listener answering at the end and
// every sheep's RSS under its bound, and reports what it saw.
func TestSoak(t *testing.T) {
	needTools(t, "fio")
	dur, err := time.ParseDuration(os.Getenv("SHEEPDOG_SOAK"))
	if err != nil || dur <= 0 {
		t.Skip("SHEEPDOG_SOAK=DURATION (make soak) runs the soak")
	}
	const memBudget = 256 << 20
	nbdAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	var sheeps []*Sheep
	extras := make([][]string, 3)
	for i := range 3 {
		extras[i] = []string{"-z", strconv.Itoa(i), "--mem-budget", "256M", "--idle-timeout", "5s"}
		if i == 0 {
			extras[i] = append(extras[i], "--nbd", nbdAddr)
		} else {
			extras[i] = append(extras[i], "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, extras[i]...))
	}
	for _, s := range sheeps {
		waitNodes(t, s, 3)
	}
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	sheeps[0].must(t, nil, "vdi", "create", "soak", "1G")

	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	uri := "nbd://" + nbdAddr + "/soak"
	fio := exec.CommandContext(ctx, "fio", "--name=soak", "--ioengine=nbd", "--uri="+uri,
		"--rw=randwrite", "--bs=64k", "--iodepth=8", "--size=512M", "--time_based",
		"--runtime="+strconv.Itoa(int(dur.Seconds())), "--verify=crc32c", "--verify_backlog=512",
		"--verify_fatal=1", "--randrepeat=0", "--output-format=normal")
	var fioOut strings.Builder
	fio.Stdout, fio.Stderr = &fioOut, &fioOut
	fio.Dir = t.TempDir() // fio leaves its verify state file in its working directory
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	fioDone := make(chan error, 1)
	go func() { fioDone <- fio.Wait() }()

	// Bad clients on every port until the end.
	var bad atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, addr := range []string{sheeps[0].Addr(), sheeps[1].Addr(), nbdAddr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			garbage := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				bad.Add(1)
				switch mrand.Intn(3) {
				case 0: // garbage, then gone
					crand.Read(garbage)
					// Malformed, not malicious: a first byte no protocol
					// version has, so that random bytes never make a
					// valid KILL_NODE or SHUTDOWN (which any client may
					// send, as to Sheepdog).
					garbage[0] = 0xff
					c.Write(garbage)
					c.Close()
				case 1: // a request header cut short
					c.Write([]byte{0x02, 0x02, 0, 0})
					c.Close()
				default: // silent, abandoned later (the idle timeout closes it)
					go func() { time.Sleep(7 * time.Second); c.Close() }()
				}
			}
		}()
	}

	// Kill -9 and restart node 1 or 2, one at a time.
	maxRSS := make([]int64, 3)
	sample := func() {
		for i, s := range sheeps {
			if s.isDead() {
				continue
			}
			if r := procRSS(s.cmd.Process.Pid); r > maxRSS[i] {
				maxRSS[i] = r
			}
		}
	}
	kills := 0
	end := time.Now().Add(dur)
	var fioErr error
	fioFinished := false
loop:
	for time.Now().Before(end) {
		victim := sheeps[1+mrand.Intn(2)]
		for wait := time.Now().Add(time.Duration(15+mrand.Intn(15)) * time.Second); time.Now().Before(wait); {
			sample()
			select {
			case fioErr = <-fioDone:
				fioFinished = true
				break loop
			case <-time.After(time.Second):
			}
		}
		victim.Kill()
		kills++
		time.Sleep(time.Duration(3+mrand.Intn(5)) * time.Second)
		i := 1
		if victim == sheeps[2] {
			i = 2
		}
		victim.start(extras[i]...)
		waitNodes(t, sheeps[0], 3)
	}
	if !fioFinished {
		fioErr = <-fioDone
	}
	close(stop)
	wg.Wait()
	sample()
	t.Logf("soak %v: %d kill -9 and restarts of node 1 or 2, %d bad connections, max RSS %d / %d / %d MiB",
		dur, kills, bad.Load(), maxRSS[0]>>20, maxRSS[1]>>20, maxRSS[2]>>20)
	t.Logf("fio:\n%s", lastLines(fioOut.String(), 25))
	for _, l := range strings.Split(fioOut.String(), "\n") {
		if strings.Contains(l, "err") || strings.Contains(l, "verify") || strings.Contains(l, "fio:") {
			t.Logf("fio: %s", l)
		}
	}
	if out := fioOut.String(); fioErr != nil || strings.Contains(out, "verify failed") || strings.Contains(out, "bad magic") {
		t.Fatalf("fio failed: %v", fioErr)
	}
	for i, s := range sheeps {
		if err := ping(s.Addr()); err != nil {
			t.Errorf("node %d's protocol listener does not answer after the soak: %v", i, err)
		}
		// A sheep's RSS: the payload budget plus the Go runtime, caches
		// and raft; 4x the budget is far above what it should reach.
		if maxRSS[i] > 4*memBudget {
			t.Errorf("node %d reached %d MiB RSS with a %d MiB budget", i, maxRSS[i]>>20, memBudget>>20)
		}
	}
	if r := run(t, nil, "nbdinfo", "nbd://"+nbdAddr+"/soak"); r.Code != 0 {
		t.Errorf("the NBD listener does not answer after the soak: %s", r.Stderr)
	}
	sheeps[0].must(t, nil, "cluster", "check")
}

// procRSS is the resident set of pid, 0 when it is gone.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
