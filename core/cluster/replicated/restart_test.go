package replicated

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// formattedSingle opens a one-node driver in a fresh dir with the given
// raft snapshot threshold and interval, waits for its leadership and
// formats the cluster; it returns the config, for a restart.
func formattedSingle(t *testing.T, threshold uint64, interval time.Duration) (Config, *Driver) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.BindAddr = "127.0.0.1"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freeBase(t))), NrVnodes: 128}
	cfg.SnapshotThreshold, cfg.SnapshotInterval = threshold, interval
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a leader", d.Quorum)
	if res, err := d.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindFormat, Ctime: 1, Copies: 1, Nodes: d.Members(), Time: cluster.UnixNano(time.Now())}); err != nil || res != proto.ResSuccess {
		t.Fatalf("format: %v %v", res, err)
	}
	return cfg, d
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
	cfg, d := formattedSingle(t, 16, 50*time.Millisecond)
	ctx := context.Background()
	addVdis(t, d, 1, 40)
	waitFor(t, "a snapshot", func() bool {
		snaps, err := d.snaps.List()
		return err == nil && len(snaps) > 0
	})
	d.crash()
	// No snapshot of the next entries: they are in the log only.
	cfg.SnapshotThreshold, cfg.SnapshotInterval = 1<<20, time.Hour
	d, err := Open(cfg)
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

// objectLike is how Sheepdog's functional suite recognises an object file
// anywhere under a store dir (common.rc's _list_*_obj: find | grep -E).
var objectLike = regexp.MustCompile(`/(00|8|4|2|08)[0-9a-f]{14}`)

// A store of an earlier version has raft-wal's segment files under their
// bare numeric names, which look like data objects to Sheepdog's tools. A
// node restarted on such a store renames them and finds its whole log;
// after that nothing under the store dir looks like an object.
func TestRestartRenamesOldSegmentFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft and memberlist")
	}
	t.Parallel()
	cfg, d := formattedSingle(t, 1<<20, time.Hour) // the state is in the log only
	ctx := context.Background()
	addVdis(t, d, 1, 5)
	d.crash()

	// Back to the old layout: the segments under raft-wal's own names.
	walDir := filepath.Join(cfg.Dir, "raft", "wal")
	ents, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	old := 0
	for _, e := range ents {
		if n, ok := strings.CutPrefix(e.Name(), segmentPrefix); ok {
			if err := os.Rename(filepath.Join(walDir, e.Name()), filepath.Join(walDir, n)); err != nil {
				t.Fatal(err)
			}
			old++
		}
	}
	if old == 0 {
		t.Fatalf("no %s* segment file in %s", segmentPrefix, walDir)
	}

	d, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.crash()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := d.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	var vids int
	d.View(func(s *cluster.State) { vids = len(s.SortedVids()) })
	if vids != 5 {
		t.Fatalf("restarted node has %d of the 5 VDIs of its old-layout log", vids)
	}
	err = filepath.WalkDir(cfg.Dir, func(p string, _ fs.DirEntry, err error) error {
		if err == nil && objectLike.MatchString(p) {
			t.Errorf("%s looks like an object to Sheepdog's tools", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
