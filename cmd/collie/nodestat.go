package main

import (
	"fmt"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// nodeStat is dog's node_stat without -w: STAT on the sheep named by
// -a/-p, printed as its two-row table.
//
// -w (print the table with bandwidth columns every second) is not offered:
// the option is not in the subcommand's option string, so "-w" is refused
// by the option parser like any unknown option.
func nodeStat(s *session, _ []string) error {
	req := proto.NewRequest(proto.OpStat)
	buf := make([]byte, proto.StatSize)
	rsp, _, err := s.do(&req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "failed to get stat information: %s", rsp.Result)
	}
	var st proto.Stat
	if err := st.Unmarshal(buf); err != nil {
		return failf(exitFailure, "failed to get stat information: %v", err)
	}
	s.out.WriteString(formatNodeStat(st, s.opts.raw))
	return nil
}

// formatNodeStat is dog's node_stat table: a header, then the client
// (gateway) and peer rows, tab-separated; -r drops the header and the row
// names and prints the byte counts in decimal.
//
// The header names the columns Write then Read, but dog prints the read
// count first and the write count second (its -w table has them the right
// way round). We print what dog prints, so that scripts reading dog's
// output read ours the same way. Peers have no flush counter: dog prints 0.
func formatNodeStat(st proto.Stat, raw bool) string {
	var b strings.Builder
	if !raw {
		b.WriteString("Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\nClient\t")
	}
	fmt.Fprintf(&b, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
		st.GwayActive, st.GwayTotal, st.GwayRead, st.GwayWrite, st.GwayRemove, st.GwayFlush,
		strnumber(st.GwayRx, raw), strnumber(st.GwayTx, raw))
	if !raw {
		b.WriteString("Peer\t")
	}
	fmt.Fprintf(&b, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
		st.PeerActive, st.PeerTotal, st.PeerRead, st.PeerWrite, st.PeerRemove, 0,
		strnumber(st.PeerRx, raw), strnumber(st.PeerTx, raw))
	return b.String()
}
