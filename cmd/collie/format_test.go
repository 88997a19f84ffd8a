package main

import (
	"bufio"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// The captures in testdata were recorded against Sheepdog 1.0: dog 1.0's
// output (dog-session.txt) and the wire exchange behind it (dog-wire.log).
// The capture's local time zone was UTC.

// sessionOutputs maps each "$ dog ..." command line of dog-session.txt to
// its output (without the "[exit N]" line). A command that appears twice
// keeps its first output.
func sessionOutputs(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/dog-session.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var cmd string
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "$ "):
			cmd = strings.TrimPrefix(line, "$ ")
			b.Reset()
		case strings.HasPrefix(line, "[exit "):
			if _, ok := out[cmd]; !ok {
				out[cmd] = b.String()
			}
		default:
			b.WriteString(line + "\n")
		}
	}
	return out
}

// wireData returns the hex payload of the n-th (0-based) "<conn> RSP data"
// line of connection conn in dog-wire.log.
func wireData(t *testing.T, conn string, n int) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/dog-wire.log")
	if err != nil {
		t.Fatal(err)
	}
	prefix := conn + " RSP data "
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		if n > 0 {
			n--
			continue
		}
		b, err := hex.DecodeString(strings.TrimPrefix(line, prefix))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return b
	}
	t.Fatalf("no RSP data #%d for %s", n, conn)
	return nil
}

func TestStrnumber(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
		raw  string
	}{
		{0, "0.0 MB", "0"},
		{4 << 20, "4.0 MB", "4194304"},
		{8 << 20, "8.0 MB", "8388608"},
		{64 << 20, "64 MB", "67108864"},
		{10 << 20, "10 MB", "10485760"},
		{1023 << 20, "1023 MB", "1072693248"},
		{1 << 30, "1.0 GB", "1073741824"},
		{0x12e38c1000, "76 GB", "81127018496"},
		{4 << 40, "4.0 TB", "4398046511104"},
		{1 << 54, "16 PB", "18014398509481984"},
		{512 << 10, "0.5 MB", "524288"},
	} {
		if got := strnumber(tc.in, false); got != tc.want {
			t.Errorf("strnumber(%d) = %q, want %q", tc.in, got, tc.want)
		}
		if got := strnumber(tc.in, true); got != tc.raw {
			t.Errorf("raw strnumber(%d) = %q, want %q", tc.in, got, tc.raw)
		}
	}
}

func TestClusterInfoMatchesCapture(t *testing.T) {
	want := sessionOutputs(t)["dog cluster info -v"]
	// c4's second STAT_CLUSTER reply: one epoch record with room for 1 node.
	var l proto.EpochLog
	if err := l.Unmarshal(wireData(t, "c4", 2), 1); err != nil {
		t.Fatal(err)
	}
	st := clusterStat{Result: proto.ResSuccess, HasData: true, Logs: []proto.EpochLog{l}}
	if got := formatClusterInfo(st, true, false, false, time.UTC); got != want {
		t.Errorf("cluster info -v:\n got %q\nwant %q", got, want)
	}
}

func TestClusterInfoVariants(t *testing.T) {
	n := proto.Node{NodeID: proto.NodeID{Addr: [16]byte{12: 127, 15: 1}, Port: 7000}, NrVnodes: 128}
	n2 := n
	n2.Port = 7001
	ctime := uint64(1514764800) << 32 // 2018-01-01 00:00:00 UTC
	logs := []proto.EpochLog{
		{Ctime: ctime, Time: 1514764805, Epoch: 2, NrCopies: 3, Flags: proto.ClusterFlagAutoVnodes, DrvName: "plain", Nodes: []proto.Node{n, n2}},
		{Time: 1514764800, Epoch: 1, Nodes: []proto.Node{n}},
	}
	for _, tc := range []struct {
		name               string
		st                 clusterStat
		verbose, raw, diff bool
		want               string
	}{
		{"plain", clusterStat{Result: proto.ResSuccess, HasData: true, Logs: logs}, false, false, false,
			"Cluster status: running, auto-recovery enabled\n\nCluster created at Mon Jan  1 00:00:00 2018\n\n" +
				"Epoch Time           Version [Host:Port:V-Nodes,,,]\n" +
				"2018-01-01 00:00:05      2 [127.0.0.1:7000:128, 127.0.0.1:7001:128]\n" +
				"2018-01-01 00:00:00      1 [127.0.0.1:7000:128]\n"},
		{"raw", clusterStat{Result: proto.ResSuccess, HasData: true, Logs: logs}, false, true, false,
			"running, auto-recovery enabled\n\n1514764805 2 [127.0.0.1:7000:128, 127.0.0.1:7001:128]\n1514764800 1 [127.0.0.1:7000:128]\n"},
		{"diff", clusterStat{Result: proto.ResSuccess, HasData: true, Logs: logs}, false, true, true,
			"running, auto-recovery enabled\n\n1514764805 2 [+127.0.0.1:7001]\n1514764800 1 [formated]\n"},
		{"unformatted", clusterStat{Result: proto.ResWaitForFormat}, false, false, false,
			"Cluster status: Waiting for cluster to be formatted\n\n"},
		{"unformatted verbose", clusterStat{Result: proto.ResWaitForFormat}, true, false, false,
			"Cluster status: Waiting for cluster to be formatted\nCluster store: Waiting for cluster to be formatted\nCluster vnode mode: node\n"},
	} {
		if got := formatClusterInfo(tc.st, tc.verbose, tc.raw, tc.diff, time.UTC); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func captureNodes(t *testing.T) []proto.Node {
	t.Helper()
	b := wireData(t, "c6", 0) // GET_NODE_LIST reply
	nodes, err := proto.UnmarshalNodes(b, len(b)/proto.NodeSize)
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func TestNodeListMatchesCapture(t *testing.T) {
	outs := sessionOutputs(t)
	nodes := captureNodes(t)
	var got, raw strings.Builder
	got.WriteString(nodeListHeader)
	for i, n := range nodes {
		got.WriteString(formatNodeRow(i, n, false))
		raw.WriteString(formatNodeRow(i, n, true))
	}
	if want := outs["dog node list"]; got.String() != want {
		t.Errorf("node list:\n got %q\nwant %q", got.String(), want)
	}
	if want := outs["dog node list -r"]; raw.String() != want {
		t.Errorf("node list -r:\n got %q\nwant %q", raw.String(), want)
	}
}

func TestNodeInfoMatchesCapture(t *testing.T) {
	space := captureNodes(t)[0].Space // an empty store: size = free = space
	got := nodeInfoHeader + formatNodeInfoRow(0, space, space, false) + formatNodeInfoTotal(space, space, 0, false)
	if want := sessionOutputs(t)["dog node info"]; got != want {
		t.Errorf("node info:\n got %q\nwant %q", got, want)
	}
	if got, want := formatNodeInfoRow(1, 100<<30, 25<<30, true), "1 107374182400 80530636800 26843545600 75%\n"; got != want {
		t.Errorf("raw row = %q, want %q", got, want)
	}
	if got, want := formatNodeInfoTotal(0, 0, 0, true), "Total 0 0 0 0% 0\n"; got != want {
		t.Errorf("raw total = %q, want %q", got, want)
	}
}

func TestVdiListMatchesCapture(t *testing.T) {
	outs := sessionOutputs(t)
	const ctime = 1795675537
	alice := vdiRow{Name: "Alice", Size: 64 << 20, Ctime: ctime, Vid: 0x15d167, Copies: 1, BlockSizeShift: 22}
	pre := vdiRow{Name: "Pre", Size: 8 << 20, Used: 8 << 20, Ctime: ctime, Vid: 0x5afa26, Copies: 1, BlockSizeShift: 22}
	snap := alice
	snap.Snapshot, snap.SnapID, snap.Tag, snap.Used = true, 1, "s1", 4<<20
	work := alice
	work.Vid, work.Shared = 0x15d168, 4<<20
	charlie := vdiRow{Name: "Charlie", Clone: true, Size: 64 << 20, Shared: 4 << 20, Ctime: ctime, Vid: 0x3ca881, Copies: 1, BlockSizeShift: 22}

	render := func(raw, header bool, rows ...vdiRow) string {
		var b strings.Builder
		if header {
			b.WriteString(vdiListHeader)
		}
		for _, r := range rows {
			b.WriteString(formatVdiRow(r, raw, time.UTC))
		}
		return b.String()
	}
	if got, want := render(false, true, alice, pre), outs["dog vdi list"]; got != want {
		t.Errorf("vdi list:\n got %q\nwant %q", got, want)
	}
	if got, want := render(true, false, alice, pre), outs["dog vdi list -r"]; got != want {
		t.Errorf("vdi list -r:\n got %q\nwant %q", got, want)
	}
	// The second "dog vdi list" of the session, after snapshot and clone.
	want := "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n" +
		"s Alice        1   64 MB  4.0 MB  0.0 MB 2026-11-26 06:45   15d167      1            s1  22\n" +
		"  Alice        0   64 MB  0.0 MB  4.0 MB 2026-11-26 06:45   15d168      1                22\n" +
		"c Charlie      0   64 MB  0.0 MB  4.0 MB 2026-11-26 06:45   3ca881      1                22\n" +
		"  Pre          0  8.0 MB  8.0 MB  0.0 MB 2026-11-26 06:45   5afa26      1                22\n"
	if got := render(false, true, snap, work, charlie, pre); got != want {
		t.Errorf("vdi list after snapshot:\n got %q\nwant %q", got, want)
	}
	// Raw mode: snapshot flag, escaped name, EC redundancy.
	r := vdiRow{Name: `a b\c`, Snapshot: true, SnapID: 2, Size: 1 << 30, Ctime: 1, Vid: 0xab, Copies: 6, Policy: 0x22, Tag: "t", BlockSizeShift: 22}
	if got, want := formatVdiRow(r, true, time.UTC), "s a\\ b\\\\c 2 1073741824 0 0 1 ab 4:2 t 22\n"; got != want {
		t.Errorf("raw row = %q, want %q", got, want)
	}
}

func TestNewVdiRow(t *testing.T) {
	ino := &proto.Inode{Name: "Charlie", CreateTime: 1795675537<<32 | 123000, VdiSize: 64 << 20, NrCopies: 1,
		BlockSizeShift: 22, SnapID: 1, VdiID: 0x3ca881, ParentVdiID: 0x15d167}
	r := newVdiRow(ino, 2, 3)
	want := vdiRow{Name: "Charlie", Clone: true, Size: 64 << 20, Used: 8 << 20, Shared: 12 << 20, Ctime: 1795675537,
		Vid: 0x3ca881, Copies: 1, BlockSizeShift: 22}
	if r != want {
		t.Errorf("newVdiRow = %+v, want %+v", r, want)
	}
	ino.SnapCtime, ino.SnapID = 1, 3
	if r := newVdiRow(ino, 0, 0); !r.Snapshot || r.Clone || r.SnapID != 3 {
		t.Errorf("snapshot row = %+v", r)
	}
}

func TestRecoveryHeaderMatchesCapture(t *testing.T) {
	if got, want := recoveryHeader, sessionOutputs(t)["dog node recovery"]; got != want {
		t.Errorf("node recovery:\n got %q\nwant %q", got, want)
	}
	n := captureNodes(t)[0]
	st := proto.RecoveryState{InRecovery: true, NrFinished: 1, NrTotal: 4}
	if got, want := formatRecoveryRow(0, n, st, false), "   0   127.0.0.1:7700        128          0       25.0%\n"; got != want {
		t.Errorf("recovery row = %q, want %q", got, want)
	}
}

func TestRedundancy(t *testing.T) {
	for _, tc := range []struct {
		copies, policy uint8
		want           string
	}{{1, 0, "1"}, {3, 0, "3"}, {6, 0x22, "4:2"}, {3, 0x11, "2:1"}, {31, 0x8f, "16:15"}} {
		if got := redundancy(tc.copies, tc.policy); got != tc.want {
			t.Errorf("redundancy(%d, %#x) = %q, want %q", tc.copies, tc.policy, got, tc.want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	got := progressLine(180<<20, 400<<20, 80)
	want := " 45.0 % [======================>                           ] 180 MB / 400 MB"
	if strings.TrimRight(got, " ") != want || len(got) != 80 {
		t.Errorf("progressLine =\n%q\nwant\n%q (padded to 80)", got, want)
	}
	if got := progressLine(4, 4, 40); !strings.HasPrefix(got, "100.0 % [==========] ") {
		t.Errorf("full bar = %q", got)
	}
}
