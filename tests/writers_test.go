package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// qemuSession is one qemu-io process kept open on an export: its NBD
// connection (and so the sheep's shared volume, with its cached table)
// lives across commands. Interactive qemu-io answers each command on its
// own, flushed.
type qemuSession struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startQemuSession(t testing.TB, uri string) *qemuSession {
	t.Helper()
	cmd := exec.Command("qemu-io", "-f", "raw", uri)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // the pipe's write end: ends when qemu-io does
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &qemuSession{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// do runs one read or write command and returns its output; a failed
// command or pattern check fails the test. Non-interactive qemu-io reads
// stdin through stdio, one line per wake-up: the next command goes only
// after the answer to this one, whose last line is "..., N ops; ...".
func (q *qemuSession) do(cmd string) string {
	q.t.Helper()
	if _, err := io.WriteString(q.in, cmd+"\n"); err != nil {
		q.t.Fatalf("qemu-io %q: %v", cmd, err)
	}
	deadline := time.AfterFunc(30*time.Second, func() { q.cmd.Process.Kill() })
	defer deadline.Stop()
	var all strings.Builder
	for !strings.Contains(all.String(), " ops; ") {
		line, err := q.out.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			q.t.Fatalf("qemu-io %q: %v\n%s", cmd, err, all.String())
		}
	}
	if s := all.String(); strings.Contains(s, "failed") || strings.Contains(s, "error") {
		q.t.Fatalf("qemu-io %q:\n%s", cmd, s)
	}
	return all.String()
}

// One VDI has one writer at a time, as in Sheepdog; but a second writer
// (collie, while an NBD client holds the export open) must not lose or
// hide acknowledged data: the NBD export's cached table is checked
// against the inode before it allocates, reads a hole or reports holes.
func TestNBDAndCollieWriteOneVdi(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "v", "16M")
	uri := nbdURI(addr, "v")
	q := startQemuSession(t, uri)
	q.do("read -P 0 0 4M") // the export is open; its table says: all holes

	// collie allocates object 0 (1 MiB at 1M) and object 2 behind the
	// export's back.
	s.must(t, bytes.Repeat([]byte{0xab}, 1<<20), "vdi", "write", "v", "1M", "1M")
	s.must(t, bytes.Repeat([]byte{0x5a}, 4096), "vdi", "write", "v", "8M", "4096")

	q.do("read -P 0xab 1M 1M")
	q.do("read -P 0x5a 8M 4k")
	// A partial write into object 0: a WRITE, not a CREATE zeroing
	// collie's megabyte.
	q.do("write -f -P 0xcd 0 4k") // FUA
	want := append(bytes.Repeat([]byte{0xcd}, 4096), make([]byte, 1<<20-4096)...)
	want = append(want, bytes.Repeat([]byte{0xab}, 1<<20)...)
	if got := collieReadAt(t, s, "v", 0, 2<<20); !bytes.Equal(got, want) {
		t.Fatal("collie's data in object 0 was lost to the NBD write")
	}

	// A map through the same shared volume reports collie's objects as
	// data (a copy trusting a stale hole would skip them).
	s.must(t, bytes.Repeat([]byte{0x11}, 4096), "vdi", "write", "v", "12M", "4096")
	var extents []struct {
		Start, Length int64
		Data          bool
	}
	out := tool(t, "qemu-img", "map", "--output=json", "-f", "raw", uri)
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	data := map[int64]bool{}
	for _, e := range extents {
		for o := e.Start; o < e.Start+e.Length; o += 4 << 20 {
			data[o>>22] = e.Data
		}
	}
	if !data[0] || data[1] || !data[2] || !data[3] {
		t.Fatalf("qemu-img map: objects with data %v, want 0, 2, 3\n%s", data, out)
	}
}
