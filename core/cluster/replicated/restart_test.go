package replicated

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// addVdis commits VDIs first .. first+n-1.
func addVdis(t *testing.T, d *Driver, first, n uint32) {
	t.Helper()
	for v := first; v < first+n; v++ {
		res, err := d.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindAddVdi, Vid: v, Copies: 1})
		if err != nil || res != proto.ResSuccess {
			t.Fatalf("add vdi %d: %v %v", v, res, err)
		}
	}
}

// A node restarted from a raft snapshot, with entries in its log after
// it, must not let Sync return (nor be caught up) while its state lacks
// them: a VDI lookup served from that state would answer NO_VDI for a VDI
// that exists. Sync returns only once every committed entry of the log
// is in the state.
func TestRestartedSyncHoldsTheWholeLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freeBase(t))), NrVnodes: 128}
	cfg.SnapshotThreshold, cfg.SnapshotInterval = 16, 50*time.Millisecond
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a leader", d.Quorum)
	ctx := context.Background()
	if res, err := d.Propose(ctx, &cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 1, Nodes: d.Members(), Time: cluster.UnixNano(time.Now())}); err != nil || res != proto.ResSuccess {
		t.Fatalf("format: %v %v", res, err)
	}
	addVdis(t, d, 1, 40)
	waitFor(t, "a snapshot", func() bool {
		snaps, err := d.snaps.List()
		return err == nil && len(snaps) > 0
	})
	d.crash()
	// No snapshot of the next entries: they are in the log only.
	cfg.SnapshotThreshold, cfg.SnapshotInterval = 1<<20, time.Hour
	d, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addVdis(t, d, 41, 30)
	d.crash()

	for round := range 3 {
		d, err = Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var before int
		d.View(func(s *cluster.State) { before = len(s.SortedVids()) })
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.Sync(sctx)
		cancel()
		var after int
		d.View(func(s *cluster.State) { after = len(s.SortedVids()) })
		t.Logf("round %d: %d vdis restored, Sync took %v (err %v), then %d vdis", round, before, time.Since(start), err, after)
		if err == nil && after != 70 {
			t.Fatalf("round %d: Sync returned with %d of the 70 VDIs in the state", round, after)
		}
		if !d.CaughtUp() && err == nil {
			t.Fatalf("round %d: Sync returned before the node caught up with its log", round)
		}
		d.crash()
	}
}
