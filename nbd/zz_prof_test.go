//go:build prof

package nbd

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	sdcluster "github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/store"
	"log/slog"
)

func TestProfileFio(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	st, err := store.Open(store.Config{Dir: dir, NoSync: os.Getenv("NOSYNC") != ""})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sdcluster.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	self := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7000")), NrVnodes: 128, Space: 1 << 40}
	if _, err := cl.Propose(ctx, &sdcluster.Entry{Kind: sdcluster.KindFormat, Ctime: 1, Copies: 1, BlockSizeShift: 22, Store: "plain", Nodes: []proto.Node{self}}); err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(self.NodeID, st, cl, gateway.NewPeers(), &store.Locks{}, log)
	vs := vdi.New(gw, cl, log)
	if _, err := vs.New(ctx, vdi.NewParams{Name: "bench", Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Objects: gw, Vids: func() []uint32 { return nil }, Lookup: func(ctx context.Context, name, tag string, snapid uint32) (uint32, error) {
		i, err := vs.Lookup(ctx, name, tag, snapid)
		return i.Vid, err
	}})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(l)
	defer srv.Close()
	uri := "nbd://" + l.Addr().String() + "/bench"
	run := func(args ...string) {
		out, err := exec.Command("fio", append([]string{"--name=x", "--ioengine=nbd", "--uri=" + uri, "--size=1G"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatal(err, string(out))
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "IOPS=") {
				t.Log(args, line)
			}
		}
	}
	run("--rw=write", "--bs=1M", "--iodepth=8")
	for _, j := range strings.Split(os.Getenv("JOBS"), ";") {
		run(append(strings.Fields(j), "--time_based", "--runtime=5")...)
	}
}
