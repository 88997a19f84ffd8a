package tests

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// establishedTo counts the established TCP connections to 127.0.0.1:port
// (from /proc/net/tcp: local or remote end on port, state 01).
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 3 && f[3] == "01" && f[2] == want {
			n++
		}
	}
	return n
}

// Sheeps started with an IO NIC (sheep -i host=ADDR,port=PORT, Sheepdog's
// option) send each other object I/O there: after a replicated write
// through one sheep, the other's IO port holds a connection from it, and
// the data reads back through both.
func TestIONicCarriesPeerIO(t *testing.T) {
	parallel(t)
	ioA, ioB := freePort(t), freePort(t)
	a := startSheep(t, "-z", "0", "-i", "host=127.0.0.1,port="+strconv.Itoa(ioA))
	b := startSheep(t, "-z", "1", "--join", a.Addr(), "-i", "host=127.0.0.1,port="+strconv.Itoa(ioB))
	waitNodes(t, a, 2)
	waitNodes(t, b, 2)
	a.must(t, nil, "cluster", "format", "-c", "2")
	if n := establishedTo(t, ioB); n != 0 {
		t.Fatalf("%d connections to b's IO NIC before any I/O", n)
	}
	data := seedVdi(t, a, "io", 8<<20)
	if establishedTo(t, ioB) == 0 {
		t.Fatalf("a replicated write through a left no connection on b's IO NIC (port %d)", ioB)
	}
	mustRead(t, a, "io", data, "through a")
	mustRead(t, b, "io", data, "through b")
}
