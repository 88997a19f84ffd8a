package netlimit

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A connection from this host gets the small send buffer; the kernel
// reports it doubled. Left alone, it starts at tcp_wmem's default, which
// autotuning grows later.
func TestLoopbackSendBuffer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sndbuf := func() int {
		rc, err := nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	// The kernel clamps the request to net.core.wmem_max first.
	want := loopbackSendBuffer
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_max"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			want = min(want, max)
		}
	}
	before := sndbuf()
	if before == 2*want {
		t.Fatalf("SO_SNDBUF is %d before the cap: the test cannot tell", before)
	}
	keepSendBufferSmall(nc.(*net.TCPConn))
	if v := sndbuf(); v != 2*want {
		t.Fatalf("SO_SNDBUF = %d after keepSendBufferSmall (%d before), want %d", v, before, 2*want)
	}
}
