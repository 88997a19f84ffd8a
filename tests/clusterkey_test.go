package tests

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/server"
)

func writeKey(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.key")
	key := make([]byte, 32)
	crand.Read(key)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sniffer records every frame on the loopback interface (AF_PACKET, as
// tcpdump does, no tool needed) until stopped.
type sniffer struct {
	fd   int
	mu   sync.Mutex
	data []byte
	done chan struct{}
}

func sniffLoopback(t *testing.T) *sniffer {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
	if err != nil {
		skipUnlessRequired(t, "raw packet socket (root needed): %v", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<20)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	s := &sniffer{fd: fd, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1<<17)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if n > 0 {
				s.mu.Lock()
				s.data = append(s.data, buf[:n]...)
				s.mu.Unlock()
			}
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				return
			}
		}
	}()
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// stop ends the capture and returns every byte seen.
func (s *sniffer) stop() []byte {
	time.Sleep(300 * time.Millisecond) // frames still in the socket's queue
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	unix.Close(s.fd)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

// leaks counts the 64-byte pieces of pattern found in captured.
func leaks(captured, pattern []byte) int {
	n := 0
	for off := 0; off+64 <= len(pattern); off += 64 {
		if bytes.Contains(captured, pattern[off:off+64]) {
			n++
		}
	}
	return n
}

// A 3-node copies=3 cluster with a cluster key: data written through one
// node reaches the other two and survives a node's loss, yet no 64-byte
// piece of it crosses the wire in clear between sheeps (gossip, raft and
// peer object traffic are encrypted); a sheep with no key or another key
// cannot join; peer-only ops from a plain client are refused, and a TLS
// client without the cluster's certificate is dropped.
func TestClusterKey(t *testing.T) {
	parallel(t)
	key := writeKey(t)
	var sheeps []*Sheep
	for i := range 3 {
		extra := []string{"-z", strconv.Itoa(i), "--cluster-key", key}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, extra...))
	}
	for _, s := range sheeps {
		waitNodes(t, s, 3)
	}
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	sheeps[0].must(t, nil, "vdi", "create", "secret", "8M")
	vid := proto.VdiNameHash("secret") // the first vid probed: a fresh cluster has no collision

	// The write goes in through node 0's UNIX socket, so the only TCP on
	// loopback during the capture is between sheeps (and other tests',
	// which never hold this random pattern).
	pattern := make([]byte, 4096)
	crand.Read(pattern)
	ctx := context.Background()
	c, err := client.Dial(ctx, filepath.Join(sheeps[0].Dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sn := sniffLoopback(t)
	// The capture can see a pattern in clear: the same bytes over a
	// plain loopback connection of the test's own are found.
	control, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if a, err := control.Accept(); err == nil {
			a.Read(make([]byte, 8192))
			a.Close()
		}
	}()
	marker := make([]byte, 4096)
	crand.Read(marker)
	if cc, err := net.Dial("tcp", control.Addr().String()); err == nil {
		cc.Write(marker)
		cc.Close()
	}
	for i := uint32(0); i < 2; i++ {
		req := proto.NewRequest(proto.OpCreateAndWriteObj)
		req.Flags |= proto.FlagCmdWrite
		req.SetObj(proto.ObjArgs{Oid: proto.VidToDataOid(vid, i), Copies: 3})
		if rsp, _, err := c.Call(ctx, &req, pattern, nil); err != nil || rsp.Result != proto.ResSuccess {
			t.Fatalf("write object %d: %v %v", i, rsp.Result, err)
		}
	}
	captured := sn.stop()
	control.Close()
	if leaks(captured, marker) == 0 {
		t.Fatalf("the capture (%d bytes) missed a pattern sent in clear: the check would prove nothing", len(captured))
	}
	if n := leaks(captured, pattern); n > 0 {
		t.Fatalf("%d of 64 pieces of the written pattern crossed loopback in clear between keyed sheeps", n)
	}
	t.Logf("captured %d bytes on loopback during the write: no piece of the pattern in clear", len(captured))
	for i, s := range sheeps {
		got, err := os.ReadFile(filepath.Join(s.Dir, "obj", fmt.Sprintf("%016x", proto.VidToDataOid(vid, 0))))
		if len(got) < len(pattern) || !bytes.Equal(got[:len(pattern)], pattern) {
			t.Fatalf("node %d's copy of object 0 is missing or differs (%v)", i, err)
		}
	}

	// Strangers: a sheep with no key and one with another key.
	var wg sync.WaitGroup
	results := make([]Result, 2)
	for i, args := range [][]string{{}, {"--cluster-key", writeKey(t)}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			argv := append([]string{"-f", "-b", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "--nbd", "none", "--join", sheeps[0].Addr()}, args...)
			results[i] = run(t, nil, bin("sheep"), append(argv, t.TempDir())...)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Code == 0 {
			t.Errorf("stranger %d (no key, other key) started and exited 0:\n%s%s", i, r.Stdout, r.Stderr)
		}
		t.Logf("stranger %d refused: exit %d: %s", i, r.Code, lastLine(r.Stderr))
	}
	waitNodes(t, sheeps[0], 3)

	// Peer-only ops from a plain client.
	conn, err := net.Dial("tcp", sheeps[1].Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if rsp := call(t, conn, proto.NewRequest(server.OpClusterPropose), []byte(`{"Kind":3,"Vid":1,"Copies":1}`)); rsp.Result != proto.ResNoSupport {
		t.Errorf("raft proposal from a plain client: %v, want refused (%v)", rsp.Result, proto.ResNoSupport)
	}
	peerRead := proto.NewRequest(proto.OpReadPeer)
	peerRead.SetObj(proto.ObjArgs{Oid: proto.VidToDataOid(vid, 0)})
	peerRead.DataLength = 4096
	if rsp := call(t, conn, peerRead, nil); rsp.Result != proto.ResNoSupport {
		t.Errorf("peer read from a plain client: %v, want refused", rsp.Result)
	}
	// A TLS client with a certificate of its own making is dropped.
	tc, err := tls.Dial("tcp", sheeps[1].Addr(), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		req := proto.NewRequest(proto.OpGetNodeList)
		b := make([]byte, proto.HeaderSize)
		req.Marshal(b)
		tc.Write(b)
		if _, err = tc.Read(b); err == nil {
			t.Error("a TLS client without the cluster's certificate got an answer")
		}
		tc.Close()
	}
	// The refusal is logged by the sheep's side of the handshake, which
	// may finish after the client saw its connection fail.
	waitFor(t, 10, "the refusals in sheep.log", func() (bool, string) {
		log, _ := os.ReadFile(filepath.Join(sheeps[1].Dir, "sheep.log"))
		return bytes.Contains(log, []byte("peer TLS refused")) && bytes.Contains(log, []byte("not an authenticated peer")),
			"sheep.log does not record the refused TLS client and peer-only ops"
	})

	// The keyed cluster still recovers: kill node 2, the others serve.
	sheeps[2].Kill()
	waitNodes(t, sheeps[0], 2)
	sheeps[0].must(t, pattern, "vdi", "write", "secret", "4194304", "4096")
	if got := sheeps[1].must(t, nil, "vdi", "read", "secret", "4194304", "4096"); got != string(pattern) {
		t.Fatal("data written after node 2 was killed reads back differently through node 1")
	}
	// The objects written before (not in the inode: read them as objects).
	c1, err := client.Dial(ctx, filepath.Join(sheeps[1].Dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	got := make([]byte, len(pattern))
	req := proto.NewRequest(proto.OpReadObj)
	req.SetObj(proto.ObjArgs{Oid: proto.VidToDataOid(vid, 1)})
	req.DataLength = uint32(len(got))
	if rsp, _, err := c1.Call(ctx, &req, nil, got); err != nil || rsp.Result != proto.ResSuccess || !bytes.Equal(got, pattern) {
		t.Fatalf("object 1 through node 1 after node 2 was killed: %v %v, equal %v", rsp.Result, err, bytes.Equal(got, pattern))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
