package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSingleNodeFlow is the foundation scenario: format, create, write 8 MiB
// of random data at 4 MiB, read it back, holes read as zeros, list in dog's
// format, node list shows the node.
func TestSingleNodeFlow(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	if out := s.must(t, nil, "cluster", "format", "-c", "1"); out != "using backend plain store\n" {
		t.Fatalf("format printed %q", out)
	}
	info := s.must(t, nil, "cluster", "info")
	if !strings.HasPrefix(info, "Cluster status: running, auto-recovery enabled\n") {
		t.Fatalf("cluster info:\n%s", info)
	}
	if !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d      1 \[127\.0\.0\.1:` + strconv.Itoa(s.Port) + `:128\]$`).MatchString(info) {
		t.Fatalf("cluster info lacks the epoch line:\n%s", info)
	}
	s.must(t, nil, "vdi", "create", "Alice", "64M")

	data := make([]byte, 8<<20)
	rand.Read(data)
	s.must(t, data, "vdi", "write", "Alice", strconv.Itoa(4<<20), strconv.Itoa(len(data)))
	got := s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(4<<20), strconv.Itoa(len(data)))
	if !bytes.Equal([]byte(got), data) {
		t.Fatalf("read back %d bytes, differs from the %d written", len(got), len(data))
	}
	// Options may come before or after the arguments, as with dog.
	head := s.must(t, nil, "vdi", "read", "Alice", "0", strconv.Itoa(4<<20))
	if head != string(make([]byte, 4<<20)) {
		t.Fatal("unwritten head of the VDI does not read as zeros")
	}
	tail := s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(12<<20), strconv.Itoa(52<<20))
	if tail != string(make([]byte, 52<<20)) {
		t.Fatal("unwritten tail of the VDI does not read as zeros")
	}
	// A write straddling an object boundary inside allocated objects.
	patch := bytes.Repeat([]byte{0xAB}, 1000)
	s.must(t, patch, "vdi", "write", "Alice", strconv.Itoa(8<<20-500), "1000")
	copy(data[4<<20-500:], patch)
	got = s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(4<<20), strconv.Itoa(len(data)))
	if !bytes.Equal([]byte(got), data) {
		t.Fatal("straddling write did not read back")
	}

	list := s.must(t, nil, "vdi", "list")
	wantHeader := "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n"
	if !strings.HasPrefix(list, wantHeader) {
		t.Fatalf("vdi list header:\n%q", list)
	}
	// Alice hashes to vid 15d167 (docs/protocol.md §4.1), 3 objects of 4 MiB used.
	row := regexp.MustCompile(`(?m)^  Alice        0   64 MB  8\.0 MB  0\.0 MB \d{4}-\d\d-\d\d \d\d:\d\d   15d167      1                22$`)
	if !row.MatchString(list) {
		t.Fatalf("vdi list row:\n%s", list)
	}
	raw := s.must(t, nil, "vdi", "list", "-r")
	if !regexp.MustCompile(`^= Alice 0 67108864 8388608 0 \d+ 15d167 1  22\n$`).MatchString(raw) {
		t.Fatalf("vdi list -r:\n%q", raw)
	}
	nodes := s.must(t, nil, "node", "list")
	// dog's row format: "%4d   %-20s\t%2d%11u"; zone from 127.0.0.1.
	wantNodes := "  Id   Host:Port         V-Nodes       Zone\n" +
		fmt.Sprintf("   0   %-20s\t128   16777343\n", s.Addr())
	if nodes != wantNodes {
		t.Fatalf("node list:\n%q\nwant\n%q", nodes, wantNodes)
	}
	if raw := s.must(t, nil, "node", "list", "-r"); raw != "0 127.0.0.1:"+strconv.Itoa(s.Port)+" 128 16777343\n" {
		t.Fatalf("node list -r: %q", raw)
	}

	// The data survives a restart of the sheep.
	s.Stop()
	s.start()
	waitRunning(t, s)
	got = s.must(t, nil, "vdi", "read", "Alice", strconv.Itoa(4<<20), strconv.Itoa(len(data)))
	if !bytes.Equal([]byte(got), data) {
		t.Fatal("data differs after restart")
	}
	s.must(t, nil, "vdi", "delete", "Alice")
	if list := s.must(t, nil, "vdi", "list", "-r"); list != "" {
		t.Fatalf("after delete, vdi list -r = %q", list)
	}
	objs, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "0015d167*"))
	if len(objs) != 0 {
		t.Fatalf("data objects left after delete: %v", objs)
	}
}

// TestBadInput: every mistake gets one clear line and a non-zero exit, and
// nothing is lost.
func TestBadInput(t *testing.T) {
	s := startSheep(t)

	// Before format, as dog: exit 1 (EXIT_FAILURE) and the result's text.
	r := s.collie(t, nil, "vdi", "create", "Early", "1M")
	if want := "Failed to create VDI Early: Waiting for cluster to be formatted\n"; r.Code != 1 || r.Stderr != want {
		t.Fatalf("create before format: %+v, want exit 1 and %q", r, want)
	}
	r = s.collie(t, []byte("x"), "vdi", "write", "Early", "0", "1")
	if want := "Failed to open VDI Early (snapshot id: 0 snapshot tag: ): Waiting for cluster to be formatted\n"; r.Code != 1 || r.Stderr != want {
		t.Fatalf("write before format: %+v, want exit 1 and %q", r, want)
	}
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "Alice", "8M")
	s.must(t, []byte("precious"), "vdi", "write", "Alice", "0", "8")

	cases := []struct {
		name  string
		args  []string
		code  int
		error string
	}{
		{"duplicate", []string{"vdi", "create", "Alice", "8M"}, 1, "Failed to create VDI Alice: VDI exists already"},
		{"unknown vdi", []string{"vdi", "read", "Nope", "0", "512"}, 1, "Failed to open VDI Nope (snapshot id: 0 snapshot tag: ): No VDI found"},
		// A malformed size is a usage error: exit 64 (EXIT_USAGE), as dog's
		// option_parse_size; our text fits dog's two lines on one.
		{"bad suffix", []string{"vdi", "create", "Bob", "12X"}, 64,
			"Invalid size '12X' (you may use B, K, M, G, T or P suffixes for bytes, kilobytes, megabytes, gigabytes, terabytes and petabytes)\n"},
		{"too large", []string{"vdi", "create", "Bob", "5T"}, 64, "VDI size is larger than 4.0 TB"},
		{"read past end", []string{"vdi", "read", "Alice", "9M", "4096"}, 1, "beyond the end"},
		{"no such command", []string{"vdi", "frobnicate"}, 0, ""},
	}
	for _, c := range cases {
		r := s.collie(t, nil, c.args...)
		if r.Code == 0 || (c.code != 0 && r.Code != c.code) {
			t.Errorf("%s: exit %d, want failure %d\n%s", c.name, r.Code, c.code, r.Stderr)
		}
		if !strings.Contains(r.Stderr, c.error) {
			t.Errorf("%s: stderr %q lacks %q", c.name, r.Stderr, c.error)
		}
		if c.name != "no such command" && strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Errorf("%s: error is more than one line: %q", c.name, r.Stderr)
		}
	}
	if got := s.must(t, nil, "vdi", "read", "Alice", "0", "8"); got != "precious" {
		t.Fatalf("data changed by bad commands: %q", got)
	}
	if list := s.must(t, nil, "vdi", "list", "-r"); strings.Contains(list, "Bob") {
		t.Fatalf("failed create left a VDI: %q", list)
	}

	// A second sheep on the same port, or on the same dir, is refused.
	other := t.TempDir()
	r = run(t, nil, bin("sheep"), "-f", "-b", "127.0.0.1", "-p", strconv.Itoa(s.Port), other)
	if r.Code == 0 || !strings.Contains(r.Stderr, "address already in use") {
		t.Errorf("sheep on a used port: %+v", r)
	}
	r = run(t, nil, bin("sheep"), "-f", "-b", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), s.Dir)
	if r.Code == 0 || !strings.Contains(r.Stderr, "in use by another sheep") {
		t.Errorf("sheep on a used dir: %+v", r)
	}
	// The daemonising form reports the same error and exits non-zero.
	r = run(t, nil, bin("sheep"), "-b", "127.0.0.1", "-p", strconv.Itoa(s.Port), t.TempDir())
	if r.Code == 0 || !strings.Contains(r.Stderr, "address already in use") {
		t.Errorf("detached sheep on a used port: %+v", r)
	}
	if got := s.must(t, nil, "vdi", "read", "Alice", "0", "8"); got != "precious" {
		t.Fatalf("data changed: %q", got)
	}
}

// TestNoXattrDir: a store dir without user xattr support is refused with a
// clear error. ramfs has none; mounting it needs root.
func TestNoXattrDir(t *testing.T) {
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "mounting ramfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ramfs", "none", dir).CombinedOutput(); err != nil {
		skipUnlessRequired(t, "cannot mount ramfs: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	r := run(t, nil, bin("sheep"), "-f", "-p", strconv.Itoa(freePort(t)), filepath.Join(dir, "store"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "extended attributes") {
		t.Fatalf("sheep on ramfs: %+v", r)
	}
}

// TestHostileClients: garbage, a huge data_length and a truncated payload
// never take the sheep down; the next client is served.
func TestHostileClients(t *testing.T) {
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "Alice", "8M")

	send := func(b []byte) {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var buf [4096]byte
		c.Read(buf[:])
	}
	garbage := make([]byte, 4096)
	rand.Read(garbage)
	send(garbage)

	hdr := func(op byte, flags uint16, dlen uint32) []byte {
		h := make([]byte, 48)
		h[0], h[1] = 0x02, op
		binary.LittleEndian.PutUint16(h[2:], flags)
		binary.LittleEndian.PutUint32(h[12:], dlen)
		return h
	}
	send(hdr(0x03, 1, 0xFFFFFFFF))                         // WRITE_OBJ claiming 4 GiB of payload
	send(append(hdr(0x03, 1, 4096), make([]byte, 100)...)) // truncated payload
	send(hdr(0x02, 0, 0xFFFFFFFF))                         // READ_OBJ of a missing object, huge buffer
	send(hdr(0x15, 0, 16))                                 // READ_VDIS with a tiny buffer
	send(hdr(0x99, 0, 0))                                  // internal op with a public proto_ver
	send(hdr(0x7f, 0, 0))                                  // unknown opcode

	s.must(t, []byte("still here"), "vdi", "write", "Alice", "0", "10")
	if got := s.must(t, nil, "vdi", "read", "Alice", "0", "10"); got != "still here" {
		t.Fatalf("read %q", got)
	}
}

// TestSheepSigterm: SIGTERM, what init systems and kill send (the harness
// stops sheeps with SIGINT), stops a sheep cleanly: it exits 0 within a
// few seconds, releases its dir, and its store serves the same data after
// a restart.
func TestSheepSigterm(t *testing.T) {
	parallel(t)
	s := startSheep(t)
	s.must(t, nil, "cluster", "format", "-c", "1")
	data := seedVdi(t, s, "Alice", 16<<20)
	patch := bytes.Repeat([]byte{0x5a}, 4096)
	s.must(t, patch, "vdi", "write", "Alice", strconv.Itoa(5<<20), "4096")
	copy(data[5<<20:], patch)

	sent := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("sheep still running 5 s after SIGTERM:\n%s", s.out)
	}
	t.Logf("sheep exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if st := s.cmd.ProcessState; !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("sheep ended with %v after SIGTERM, want exit 0:\n%s", st, s.out)
	}
	s.start()
	waitRunning(t, s)
	mustRead(t, s, "Alice", data, "after a SIGTERM and a restart")
}
