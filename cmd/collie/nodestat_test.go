package main

import (
	"strings"
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

// TestNodeStatWatchRefused: -w is refused before anything is sent.
func TestNodeStatWatchRefused(t *testing.T) {
	code, stdout, stderr := runCollie("node", "stat", "-w", "-p", "1")
	if code != exitUsage || stdout != "" || !strings.HasPrefix(stderr, "collie: invalid option -- 'w'\n") {
		t.Fatalf("node stat -w: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
