package main

import (
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestFormatNodeStat pins dog's node_stat table (dog/node.c), including
// its read count under "Write" and write count under "Read".
func TestFormatNodeStat(t *testing.T) {
	st := proto.Stat{
		GwayActive: 1, GwayTotal: 20, GwayRead: 3, GwayWrite: 4, GwayRemove: 5, GwayFlush: 6,
		GwayRx: 12 << 20, GwayTx: 3 << 30,
		PeerActive: 7, PeerTotal: 30, PeerRead: 8, PeerWrite: 9, PeerRemove: 10,
		PeerRx: 512 << 10, PeerTx: 0,
	}
	for _, tc := range []struct {
		raw  bool
		want string
	}{
		{false, "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\n" +
			"Client\t1\t20\t3\t4\t5\t6\t12 MB\t3.0 GB\n" +
			"Peer\t7\t30\t8\t9\t10\t0\t0.5 MB\t0.0 MB\n"},
		{true, "1\t20\t3\t4\t5\t6\t12582912\t3221225472\n" +
			"7\t30\t8\t9\t10\t0\t524288\t0\n"},
	} {
		if got := formatNodeStat(st, tc.raw); got != tc.want {
			t.Errorf("raw=%v:\n%q\nwant\n%q", tc.raw, got, tc.want)
		}
	}
}

// TestFormatNodeStatWatch pins dog's node_stat -w table: Write and Read
// the right way round, and the since-last columns.
func TestFormatNodeStatWatch(t *testing.T) {
	last := proto.Stat{GwayTotal: 10, GwayRx: 2 << 20, GwayTx: 1 << 20, PeerTotal: 5, PeerRx: 1 << 20}
	st := proto.Stat{
		GwayActive: 1, GwayTotal: 20, GwayRead: 3, GwayWrite: 4, GwayRemove: 5, GwayFlush: 6,
		GwayRx: 12 << 20, GwayTx: 3 << 20,
		PeerActive: 7, PeerTotal: 30, PeerRead: 8, PeerWrite: 9, PeerRemove: 10,
		PeerRx: 3 << 20, PeerTx: 0,
	}
	want := "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\tWRBW\tRDBW\tRPS\n" +
		"Client\t1\t20\t4\t3\t5\t6\t12 MB\t3.0 MB\t10 MB\t2.0 MB\t10\n" +
		"Peer\t7\t30\t9\t8\t10\t0\t3.0 MB\t0.0 MB\t2.0 MB\t0.0 MB\t25\n"
	if got := formatNodeStatWatch(st, last, false); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	wantRaw := "1\t20\t4\t3\t5\t6\t12582912\t3145728\t10485760\t2097152\t10\n" +
		"7\t30\t9\t8\t10\t0\t3145728\t0\t2097152\t0\t25\n"
	if got := formatNodeStatWatch(st, last, true); got != wantRaw {
		t.Errorf("raw: got\n%q\nwant\n%q", got, wantRaw)
	}
}

// TestFormatDegraded: no row without degraded reads (dog's table as is),
// a named row or, with -r, the count alone.
func TestFormatDegraded(t *testing.T) {
	if got := formatDegraded(proto.StatExt{}, false); got != "" {
		t.Errorf("no degraded reads: %q", got)
	}
	if got := formatDegraded(proto.StatExt{DegradedReads: 12}, false); got != "Degraded reads\t12\n" {
		t.Errorf("got %q", got)
	}
	if got := formatDegraded(proto.StatExt{DegradedReads: 12}, true); got != "12\n" {
		t.Errorf("raw: got %q", got)
	}
}
