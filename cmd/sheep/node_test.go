package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// testPort returns a protocol port P with P, P+10000 and P+20000 free,
// below the kernel's ephemeral range and apart from the end-to-end tests'
// range (11000-12767).
func testPort(t *testing.T) int {
	t.Helper()
	for p := 13000 + os.Getpid()%1000; p < 14767; p++ {
		free := true
		for _, q := range []int{p, p + 10000, p + 20000} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no free port triple")
	return 0
}

func testConfig(t *testing.T, dir string) Config {
	cfg := DefaultConfig()
	cfg.Dir, cfg.Port, cfg.BindAddr, cfg.NBDAddr, cfg.NoSync = dir, testPort(t), "127.0.0.1", "none", true
	cfg.Log.level = slog.LevelWarn
	return cfg
}

// A Node runs in-process: New, Run, a client formats the cluster and
// writes and reads an object, cancelling Run stops it, Close releases the
// store dir so that a second Node opens it and finds the object.
func TestNodeInProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	cfg := testConfig(t, dir)
	addr := "127.0.0.1:" + strconv.Itoa(cfg.Port)
	var oid uint64
	data := bytes.Repeat([]byte("sheep"), 100)

	start := func() (context.CancelFunc, chan error, *Node) {
		ctx, cancel := context.WithCancel(context.Background())
		n, err := New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		return cancel, done, n
	}
	stop := func(cancel context.CancelFunc, done chan error, n *Node) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
		if err := n.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	cancel, done, n := start()
	ctx := context.Background()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	req := proto.NewRequest(proto.OpMakeFS)
	req.SetCluster(proto.ClusterArgs{Ctime: uint64(time.Now().Unix()) << 32, Copies: 1, Flags: proto.ClusterFlagAutoVnodes})
	if rsp, _, err := c.Call(ctx, &req, append([]byte("plain"), 0), nil); err != nil || rsp.Result != proto.ResSuccess {
		t.Fatalf("format: %v %v", rsp.Result, err)
	}
	nv := proto.NewRequest(proto.OpNewVdi)
	nv.SetVdi(proto.VdiArgs{VdiSize: 4 << 20, Copies: 1})
	rsp, _, err := c.Call(ctx, &nv, proto.VdiName("node", "", false), nil)
	if err != nil || rsp.Result != proto.ResSuccess {
		t.Fatalf("create vdi: %v %v", rsp.Result, err)
	}
	oid = proto.VidToDataOid(rsp.Vdi().VdiID, 0)
	w := proto.NewRequest(proto.OpCreateAndWriteObj)
	w.Flags |= proto.FlagCmdWrite
	w.SetObj(proto.ObjArgs{Oid: oid})
	rsp, _, err = c.Call(ctx, &w, data, nil)
	c.Close()
	if err != nil || rsp.Result != proto.ResSuccess {
		t.Fatalf("write: %v %v", rsp.Result, err)
	}
	stop(cancel, done, n)

	if f, err := lockDir(dir); err != nil {
		t.Fatalf("store dir still locked after Close: %v", err)
	} else {
		f.Close()
	}
	cancel, done, n = start()
	defer stop(cancel, done, n)
	got := make([]byte, len(data))
	if err := n.st.ReadAt(ctx, oid, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object after a restart: %v, equal %v", err, bytes.Equal(got, data))
	}
}

// A second Node on a store dir in use fails with a clear error; a Node
// that cannot start takes back what it created in a fresh dir.
func TestNodeStartFailures(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	cfg := testConfig(t, dir)
	ctx := context.Background()
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	other := cfg
	other.Port = cfg.Port + 1
	if _, err := New(ctx, other); err == nil || !strings.Contains(err.Error(), "in use by another sheep") {
		t.Fatalf("second node on one dir: %v", err)
	}

	fresh := filepath.Join(t.TempDir(), "fresh")
	busy := cfg
	busy.Dir = fresh // same port: listening fails after the dir was made
	if _, err := New(ctx, busy); err == nil {
		t.Fatal("a node on a port in use started")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed start left its fresh store dir: %v", err)
	}

	bad := cfg
	bad.MemBudget = 1 << 20
	if _, err := New(ctx, bad); err == nil || !strings.Contains(err.Error(), "mem-budget") {
		t.Fatalf("a config below the memory floor: %v", err)
	}
}

// A node listed to join that accepts connections but does not answer (a
// sheep that is starting too) holds checkJoin for checkJoinWait at most:
// a whole local cluster restarted at once must not wait on each other.
func TestCheckJoinSkipsSilentNode(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // read nothing, answer nothing
		}
	}()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, formatMarker), []byte("1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = checkJoin(context.Background(), []string{l.Addr().String(), l.Addr().String()}, dir)
	if err != nil {
		t.Fatalf("checkJoin: %v", err)
	}
	if el := time.Since(start); el > 3*checkJoinWait {
		t.Fatalf("checkJoin waited %v on two silent nodes, want about %v", el, 2*checkJoinWait)
	}
}
