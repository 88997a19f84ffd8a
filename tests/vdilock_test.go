package tests

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lockListHeader is dog's "vdi lock list" header.
const lockListHeader = "  Name         Id  VDI id  Tag            Owner node(s)\n"

// waitLockList polls "vdi lock list ARGS" on s until it prints want: a
// lock taken or released through one sheep reaches the others' state a
// moment later.
func waitLockList(t *testing.T, s *Sheep, want string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.must(t, nil, append([]string{"vdi", "lock", "list"}, args...)...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: vdi lock list %s:\n%q\nwant\n%q", s.Addr(), strings.Join(args, " "), got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vidOf is the vid of the working VDI name, looked up as QEMU does.
func vidOf(t *testing.T, d *qemuDriver, name string) uint32 {
	t.Helper()
	vid, res := d.findVdi(sdOpGetVdiInfo, name, "", 0)
	if res != sdResSuccess {
		t.Fatalf("GET_VDI_INFO %s: result %#x", name, res)
	}
	return vid
}

// TestVdiLockListUnlock is the operator's view of VDI locks on a cluster
// formatted with -l: QEMU's LOCK_VDI through one sheep shows up in "vdi
// lock list" with that sheep as owner, a second open elsewhere is refused,
// and "vdi lock unlock" breaks the stale lock so that another QEMU can
// open the image.
func TestVdiLockListUnlock(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 2)
	s0, s1 := sheeps[0], sheeps[1]
	s0.must(t, nil, "cluster", "format", "-c", "2", "-l")
	waitRunning(t, s1)
	s0.must(t, nil, "vdi", "create", "alpha", "16M")
	s0.must(t, nil, "vdi", "create", "beta", "16M")
	d0, d1 := newQemuDriver(t, s0), newQemuDriver(t, s1)
	alpha, beta := vidOf(t, d0, "alpha"), vidOf(t, d0, "beta")

	waitLockList(t, s0, lockListHeader)
	waitLockList(t, s0, "", "-r")

	// A QEMU on s0 opens alpha and dies without RELEASE_VDI: s0 keeps
	// holding the lock.
	if vid, res := d0.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResSuccess || vid != alpha {
		t.Fatalf("LOCK_VDI alpha: vid %x result %#x, want %x SUCCESS", vid, res, alpha)
	}
	row := fmt.Sprintf("  alpha         0  %6x                 IPv4 ip:127.0.0.1 port:%d\n", alpha, s0.Port)
	for _, s := range sheeps {
		waitLockList(t, s, lockListHeader+row)
		waitLockList(t, s, lockListHeader+row, "alpha")
		waitLockList(t, s, lockListHeader, "beta")
	}

	// Raw: flag, name, id, vid, tag (empty), owner as host:port.
	raw := s1.must(t, nil, "vdi", "lock", "list", "-r")
	fields := strings.Split(strings.TrimSuffix(raw, "\n"), " ")
	if strings.Count(raw, "\n") != 1 || len(fields) != 6 {
		t.Fatalf("vdi lock list -r: %q, want one line of 6 fields", raw)
	}
	if vid, err := strconv.ParseUint(fields[3], 16, 32); err != nil || uint32(vid) != alpha ||
		fields[0] != "=" || fields[1] != "alpha" || fields[2] != "0" || fields[4] != "" || fields[5] != s0.Addr() {
		t.Fatalf("vdi lock list -r: fields %q, want [= alpha 0 %x  %s]", fields, alpha, s0.Addr())
	}

	// A second QEMU, on the other sheep or on the same one, is refused.
	if _, res := d1.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResVdiLocked {
		t.Fatalf("second LOCK_VDI alpha: result %#x, want VDI_LOCKED", res)
	}
	if _, res := d0.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResVdiLocked {
		t.Fatalf("second LOCK_VDI alpha through the holder's sheep: result %#x, want VDI_LOCKED", res)
	}

	// The operator breaks the stale lock (from any node); the list empties
	// everywhere and the image opens again, now owned by s1.
	if out := s1.must(t, nil, "vdi", "lock", "unlock", "alpha"); out != "" {
		t.Fatalf("vdi lock unlock printed %q", out)
	}
	for _, s := range sheeps {
		waitLockList(t, s, lockListHeader)
	}
	if vid, res := d1.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResSuccess || vid != alpha {
		t.Fatalf("LOCK_VDI alpha after unlock: vid %x result %#x", vid, res)
	}
	waitLockList(t, s0, lockListHeader+fmt.Sprintf("  alpha         0  %6x                 IPv4 ip:127.0.0.1 port:%d\n", alpha, s1.Port))
	if _, res := d0.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResVdiLocked {
		t.Fatalf("LOCK_VDI alpha through s0 while s1 holds it: result %#x, want VDI_LOCKED", res)
	}

	// A snapshot keeps the vid, and so the lock, of the VDI it was taken
	// from; the new working VDI is unlocked and locks on its own. -s names
	// the snapshot.
	s0.must(t, nil, "vdi", "snapshot", "-s", "snap1", "alpha")
	snap, working := alpha, vidOf(t, d0, "alpha")
	snapRow := fmt.Sprintf("s alpha         1  %6x  snap1          IPv4 ip:127.0.0.1 port:%d\n", snap, s1.Port)
	waitLockList(t, s0, lockListHeader+snapRow)
	if vid, res := d0.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResSuccess || vid != working || vid == snap {
		t.Fatalf("LOCK_VDI alpha after the snapshot: vid %x result %#x, want %x SUCCESS", vid, res, working)
	}
	waitLockList(t, s1, fmt.Sprintf("%s%s  alpha         0  %6x                 IPv4 ip:127.0.0.1 port:%d\n", lockListHeader, snapRow, working, s0.Port))
	waitLockList(t, s1, fmt.Sprintf("s alpha 1 %x snap1 %s\n= alpha 0 %x  %s\n", snap, s1.Addr(), working, s0.Addr()), "-r")
	s0.must(t, nil, "vdi", "lock", "unlock", "-s", "snap1", "alpha")
	waitLockList(t, s1, fmt.Sprintf("%s  alpha         0  %6x                 IPv4 ip:127.0.0.1 port:%d\n", lockListHeader, working, s0.Port))
	s0.must(t, nil, "vdi", "lock", "unlock", "alpha")
	waitLockList(t, s1, lockListHeader)

	for _, c := range []struct {
		args       []string
		code       int
		stderr     string // exact, when not empty
		stdoutHas  string
		stderrHas  string
		stdoutNone bool
	}{
		// Not locked: dog's message with describe_vdi's form, exit 1.
		{args: []string{"unlock", "beta"}, code: 1, stderr: fmt.Sprintf("VDI beta (vid=%x) is not locked\n", beta), stdoutNone: true},
		{args: []string{"unlock", "-s", "snap1", "alpha"}, code: 1, stderr: fmt.Sprintf("VDI alpha (tag=snap1, vid=%x) is not locked\n", snap), stdoutNone: true},
		// Unknown names and snapshots fail cleanly, exit 1.
		{args: []string{"unlock", "nosuch"}, code: 1, stderr: "Failed to find VDI nosuch: No VDI found\n", stdoutNone: true},
		{args: []string{"unlock", "-s", "nosnap", "alpha"}, code: 1, stderr: "Failed to find VDI alpha (tag=nosnap): Failed to find requested tag\n", stdoutNone: true},
		// No name: usage, exit 64.
		{args: []string{"unlock"}, code: 64, stderrHas: "Usage: collie vdi lock"},
		// Unknown subcommand: usage, exit 1 (do_generic_subcommand).
		{args: []string{"bogus"}, code: 1, stderrHas: "Usage: collie vdi lock"},
		// No subcommand at all: usage, exit 64.
		{args: nil, code: 64, stderrHas: "Usage: collie vdi lock"},
	} {
		r := s0.collie(t, nil, append([]string{"vdi", "lock"}, c.args...)...)
		if r.Code != c.code || (c.stderr != "" && r.Stderr != c.stderr) || !strings.Contains(r.Stderr, c.stderrHas) ||
			!strings.Contains(r.Stdout, c.stdoutHas) || (c.stdoutNone && r.Stdout != "") {
			t.Errorf("collie vdi lock %s: exit %d\nstdout %q\nstderr %q", strings.Join(c.args, " "), r.Code, r.Stdout, r.Stderr)
		}
	}

	// Help lists the command with dog's description.
	if r := run(t, nil, bin("collie")); r.Code != 0 || !strings.Contains(r.Stdout, "  vdi lock                See 'dog vdi lock' for more information\n") {
		t.Errorf("collie usage: exit %d\n%s", r.Code, r.Stdout)
	}
	if r := run(t, nil, bin("collie"), "vdi"); !strings.Contains(r.Stderr, "  vdi lock\n") {
		t.Errorf("collie vdi: exit %d\n%s", r.Code, r.Stderr)
	}
}

// TestVdiLockWithoutLockFlag: on a cluster formatted without -l, LOCK_VDI
// is a lookup, nothing is ever listed and unlock says so.
func TestVdiLockWithoutLockFlag(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	s.must(t, nil, "vdi", "create", "alpha", "16M")
	for i := 0; i < 2; i++ {
		if _, res := d.findVdi(sdOpLockVdi, "alpha", "", 0); res != sdResSuccess {
			t.Fatalf("LOCK_VDI #%d: result %#x", i, res)
		}
	}
	if got := s.must(t, nil, "vdi", "lock", "list"); got != lockListHeader {
		t.Fatalf("vdi lock list: %q", got)
	}
	r := s.collie(t, nil, "vdi", "lock", "unlock", "alpha")
	if want := fmt.Sprintf("VDI alpha (vid=%x) is not locked\n", vidOf(t, d, "alpha")); r.Code != 1 || r.Stderr != want {
		t.Fatalf("vdi lock unlock: exit %d stderr %q, want 1 %q", r.Code, r.Stderr, want)
	}
}
