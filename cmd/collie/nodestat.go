package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// nodeStat is dog's node_stat: STAT on the sheep named by -a/-p, printed
// as its two-row table. With -w it asks again every second, forever, and
// prints the table with three more columns: bytes received and sent and
// requests served since the previous sample (the first sample against
// itself, so zeros).
//
// Beyond dog: when the sheep has served degraded reads of erasure-coded
// objects (proto.StatExt), the plain table gets a third row with their
// count; without any, the output is dog's.
func nodeStat(s *session, _ []string) error {
	st, ext, err := fetchStatExt(s)
	if err != nil {
		return err
	}
	if !s.opts.watch {
		s.out.WriteString(formatNodeStat(st, s.opts.raw))
		s.out.WriteString(formatDegraded(ext, s.opts.raw))
		// The object cache of this node, when on (sheep -w); dog's
		// lines stay as they are otherwise.
		if ci, err := s.getCacheInfo(); err == nil && ci.Size > 0 {
			fmt.Fprintf(s.out, "\nObject cache: size %s, used %s, %d VDIs\n", strnumber(ci.Size, s.opts.raw), strnumber(ci.Used, s.opts.raw), len(ci.Vdis))
		}
		return nil
	}
	last := st
	for {
		s.out.WriteString(formatNodeStatWatch(st, last, s.opts.raw))
		if err := s.out.Flush(); err != nil {
			return err
		}
		last = st
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(time.Second):
		}
		if st, err = fetchStat(s); err != nil {
			return err
		}
	}
}

func fetchStat(s *session) (proto.Stat, error) {
	st, _, err := fetchStatExt(s)
	return st, err
}

// fetchStatExt is STAT asking for sd_stat and our extension; ext is zero
// from a sheep that sends sd_stat alone (Sheepdog's).
func fetchStatExt(s *session) (st proto.Stat, ext proto.StatExt, err error) {
	req := proto.NewRequest(proto.OpStat)
	buf := make([]byte, proto.StatSize+proto.StatExtSize)
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return st, ext, err
	}
	if rsp.Result != proto.ResSuccess {
		return st, ext, failf(exitFailure, "failed to get stat information: %s", rsp.Result)
	}
	if err := st.Unmarshal(buf[:n]); err != nil {
		return st, ext, failf(exitFailure, "failed to get stat information: %v", err)
	}
	if n >= proto.StatSize+proto.StatExtSize {
		ext.Unmarshal(buf[proto.StatSize:n])
	}
	return st, ext, nil
}

// formatDegraded is the row node stat adds for degraded reads of
// erasure-coded objects, when there were any: named, or with -r the
// count alone.
func formatDegraded(ext proto.StatExt, raw bool) string {
	switch {
	case ext.DegradedReads == 0:
		return ""
	case raw:
		return fmt.Sprintf("%d\n", ext.DegradedReads)
	}
	return fmt.Sprintf("Degraded reads\t%d\n", ext.DegradedReads)
}

// formatNodeStatWatch is dog's node_stat -w table: unlike the plain table
// it has Write and Read the right way round, and adds WRBW and RDBW (bytes
// received and sent since last, sizes as in the All columns) and RPS
// (requests since last, always decimal).
func formatNodeStatWatch(st, last proto.Stat, raw bool) string {
	var b strings.Builder
	if !raw {
		b.WriteString("Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\tWRBW\tRDBW\tRPS\nClient\t")
	}
	fmt.Fprintf(&b, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\n",
		st.GwayActive, st.GwayTotal, st.GwayWrite, st.GwayRead, st.GwayRemove, st.GwayFlush,
		strnumber(st.GwayRx, raw), strnumber(st.GwayTx, raw),
		strnumber(st.GwayRx-last.GwayRx, raw), strnumber(st.GwayTx-last.GwayTx, raw), st.GwayTotal-last.GwayTotal)
	if !raw {
		b.WriteString("Peer\t")
	}
	fmt.Fprintf(&b, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\n",
		st.PeerActive, st.PeerTotal, st.PeerWrite, st.PeerRead, st.PeerRemove, 0,
		strnumber(st.PeerRx, raw), strnumber(st.PeerTx, raw),
		strnumber(st.PeerRx-last.PeerRx, raw), strnumber(st.PeerTx-last.PeerTx, raw), st.PeerTotal-last.PeerTotal)
	return b.String()
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
