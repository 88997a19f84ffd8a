package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// exitedPid returns the pid of a process that has exited and been reaped.
func exitedPid(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	return c.Process.Pid
}

// The registry tells a dead sheep (its process gone, or stopped) from a
// live one and from one it never held; a dead entry stays known as dead
// after the next sheep's registration tidies it away.
func TestLocalRegistryDead(t *testing.T) {
	dir := t.TempDir()
	const killed, other, stranger = "127.0.0.1:7000", "127.0.0.1:7002", "127.0.0.1:7009"
	// A sheep killed with SIGKILL: its entry names a process that is gone.
	if err := os.WriteFile(filepath.Join(dir, livePrefix+killed), []byte(strconv.Itoa(exitedPid(t))+" "+killed+" 127.0.0.1:17000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	me, peers, _, err := registerLocal(dir, "127.0.0.1:7001", "127.0.0.1:17001")
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 0 {
		t.Errorf("a dead sheep given as a join seed: %v", peers)
	}
	if _, err := os.Stat(filepath.Join(dir, livePrefix+killed)); !os.IsNotExist(err) {
		t.Errorf("the dead sheep's entry still reads as live: %v", err)
	}
	if !me.Dead(killed) {
		t.Error("a killed sheep (entry tidied away at the next registration) not dead")
	}
	if me.Dead("127.0.0.1:7001") {
		t.Error("this live sheep reported dead")
	}
	if me.Dead(stranger) {
		t.Error("a sheep the registry never held reported dead")
	}
	// A sheep that stops cleanly is gone too; started again, it lives.
	o, peers, _, err := registerLocal(dir, other, "127.0.0.1:17002")
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0] != "127.0.0.1:7001" {
		t.Errorf("join seeds %v, want the live sheep only", peers)
	}
	o.Remove()
	if !me.Dead(other) {
		t.Error("a stopped sheep not dead")
	}
	if _, _, _, err := registerLocal(dir, other, "127.0.0.1:17002"); err != nil {
		t.Fatal(err)
	}
	if me.Dead(other) {
		t.Error("a restarted sheep still dead")
	}
}
