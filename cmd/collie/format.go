package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// This file holds every piece of output whose bytes must match dog's
// (docs/protocol.md §8, testdata/dog-session.txt). The functions are pure so
// that format_test.go can compare them with the captured lines.

// Time layouts of dog's strftime and ctime calls.
const (
	listTimeLayout  = "2006-01-02 15:04"         // %Y-%m-%d %H:%M
	epochTimeLayout = "2006-01-02 15:04:05"      // %Y-%m-%d %H:%M:%S
	ctimeLayout     = "Mon Jan _2 15:04:05 2006" // ctime(3) without its '\n'
)

// strnumber is dog's human-readable size: MiB first, then 1024 per unit,
// "%.1f UNIT" below 10 and "%.0f UNIT" from 10 on. Raw mode prints bytes.
func strnumber(size uint64, raw bool) string {
	if raw {
		return strconv.FormatUint(size, 10)
	}
	units := []string{"MB", "GB", "TB", "PB", "EB", "ZB", "YB"}
	f := float64(size) / (1024 * 1024)
	i := 0
	for i < len(units)-1 && f >= 1024 {
		i++
		f /= 1024
	}
	if f >= 10 {
		return fmt.Sprintf("%.0f %s", f, units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// padRight and padLeft pad to a width counted in bytes, as C's "%-Ns" and
// "%Ns" do (Go's fmt counts runes).
func padRight(s string, w int) string {
	if len(s) >= w {
		return s
	}
	return s + strings.Repeat(" ", w-len(s))
}

func padLeft(s string, w int) string {
	if len(s) >= w {
		return s
	}
	return strings.Repeat(" ", w-len(s)) + s
}

// redundancy is "n" for n copies or "d:p" for erasure coding.
func redundancy(copies, policy uint8) string {
	return erasure.Redundancy(copies, erasure.Policy(policy))
}

const vdiListHeader = "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n"

// vdiRow is one line of "vdi list".
type vdiRow struct {
	Name           string
	Tag            string
	SnapID         uint32 // 0 for working VDIs
	Snapshot       bool
	Clone          bool // snap_id == 1 && parent != 0
	Size           uint64
	Used, Shared   uint64 // bytes
	Ctime          int64  // seconds (create_time >> 32)
	Vid            uint32
	Copies, Policy uint8
	BlockSizeShift uint8
}

// newVdiRow builds the row of an inode whose data_vdi_id entries have been
// counted into own and shared objects.
func newVdiRow(ino *proto.Inode, own, shared uint64) vdiRow {
	r := vdiRow{
		Name: ino.Name, Tag: ino.Tag, Snapshot: ino.IsSnapshot(),
		Clone: ino.SnapID == 1 && ino.ParentVdiID != 0,
		Size:  ino.VdiSize, Ctime: proto.SheepTimeSeconds(ino.CreateTime), Vid: ino.VdiID,
		Copies: ino.NrCopies, Policy: ino.CopyPolicy, BlockSizeShift: ino.BlockSizeShift,
	}
	if r.Snapshot {
		r.SnapID = ino.SnapID
	}
	objSize := uint64(1) << ino.BlockSizeShift
	r.Used, r.Shared = own*objSize, shared*objSize
	return r
}

// escapeRawName escapes whitespace and backslashes with a backslash.
func escapeRawName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case ' ', '\t', '\n', '\v', '\f', '\r', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(name[i])
	}
	return b.String()
}

// formatVdiRow is "%c %-8s %5d %7s %7s %7s %s  %7x %6s %13s %3u\n", or in
// raw mode "%c %s %d %s %s %s %s %x %s %s %u\n".
func formatVdiRow(r vdiRow, raw bool, loc *time.Location) string {
	flag := byte(' ')
	if raw {
		flag = '='
	}
	switch {
	case r.Snapshot:
		flag = 's'
	case r.Clone:
		flag = 'c'
	}
	red := redundancy(r.Copies, r.Policy)
	if raw {
		return fmt.Sprintf("%c %s %d %s %s %s %d %x %s %s %d\n", flag, escapeRawName(r.Name),
			r.SnapID, strnumber(r.Size, true), strnumber(r.Used, true), strnumber(r.Shared, true),
			r.Ctime, r.Vid, red, r.Tag, r.BlockSizeShift)
	}
	ts := time.Unix(r.Ctime, 0).In(loc).Format(listTimeLayout)
	return fmt.Sprintf("%c %s %5d %7s %7s %7s %s  %7x %6s %s %3d\n", flag, padRight(r.Name, 8),
		r.SnapID, strnumber(r.Size, false), strnumber(r.Used, false), strnumber(r.Shared, false),
		ts, r.Vid, red, padLeft(r.Tag, 13), r.BlockSizeShift)
}

const nodeListHeader = "  Id   Host:Port         V-Nodes       Zone\n"

// formatNodeRow is "%4d   %-20s\t%2d%11u\n", raw "%d %s %d %u\n".
func formatNodeRow(i int, n proto.Node, raw bool) string {
	if raw {
		return fmt.Sprintf("%d %s %d %d\n", i, n.NodeID.String(), n.NrVnodes, n.Zone)
	}
	return fmt.Sprintf("%4d   %s\t%2d%11d\n", i, padRight(n.NodeID.String(), 20), n.NrVnodes, n.Zone)
}

const nodeInfoHeader = "Id\tSize\tUsed\tAvail\tUse%\n"

// usePercent is dog's (int)((size - free) / size * 100), 0 for an empty
// store.
func usePercent(size, free uint64) int {
	if size == 0 {
		return 0
	}
	r := float64(size-free) / float64(size) * 100
	if math.IsNaN(r) {
		return 0
	}
	return int(r)
}

// formatNodeInfoRow is "%2d\t%s\t%s\t%s\t%3d%%\n", raw "%d %s %s %s %d%%\n".
func formatNodeInfoRow(i int, size, free uint64, raw bool) string {
	f := "%2d\t%s\t%s\t%s\t%3d%%\n"
	if raw {
		f = "%d %s %s %s %d%%\n"
	}
	return fmt.Sprintf(f, i, strnumber(size, raw), strnumber(size-free, raw), strnumber(free, raw), usePercent(size, free))
}

// formatNodeInfoTotal is the "Total" line and, outside raw mode, the blank
// line and the "Total virtual image size" line.
func formatNodeInfoTotal(size, free, vdiSize uint64, raw bool) string {
	if raw {
		return fmt.Sprintf("Total %s %s %s %d%% %s\n", strnumber(size, true), strnumber(size-free, true),
			strnumber(free, true), usePercent(size, free), strnumber(vdiSize, true))
	}
	return fmt.Sprintf("Total\t%s\t%s\t%s\t%3d%%\n\nTotal virtual image size\t%s\n", strnumber(size, false),
		strnumber(size-free, false), strnumber(free, false), usePercent(size, free), strnumber(vdiSize, false))
}

const recoveryHeader = "Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n"

// formatRecoveryRow is "%4d   %-20s%5d%11d%11.1f%%\n", raw
// "%d %s %d %d %d %d\n".
func formatRecoveryRow(i int, n proto.Node, st proto.RecoveryState, raw bool) string {
	if raw {
		return fmt.Sprintf("%d %s %d %d %d %d\n", i, n.NodeID.String(), n.NrVnodes, int32(n.Zone), st.NrFinished, st.NrTotal)
	}
	pct := float32(100) * float32(st.NrFinished) / float32(st.NrTotal)
	return fmt.Sprintf("%4d   %s%5d%11d%11.1f%%\n", i, padRight(n.NodeID.String(), 20), n.NrVnodes, int32(n.Zone), pct)
}

// clusterInfo is what STAT_CLUSTER answered.
type clusterStat struct {
	Result  proto.Result     // the cluster status
	HasData bool             // rsp.data_length > 0
	Logs    []proto.EpochLog // newest first
}

// formatClusterInfo renders "cluster info" (docs/protocol.md §8.3).
func formatClusterInfo(st clusterStat, verbose, raw, diff bool, loc *time.Location) string {
	var b strings.Builder
	var first proto.EpochLog
	if len(st.Logs) > 0 {
		first = st.Logs[0]
	}
	if !raw {
		b.WriteString("Cluster status: ")
	}
	if st.Result == proto.ResSuccess {
		state := "enabled"
		if first.DisableRecovery != 0 {
			state = "disabled"
		}
		fmt.Fprintf(&b, "running, auto-recovery %s\n", state)
	} else {
		fmt.Fprintf(&b, "%s\n", st.Result)
	}
	if verbose {
		if !raw {
			b.WriteString("Cluster store: ")
		}
		if st.Result == proto.ResSuccess {
			fmt.Fprintf(&b, "%s with %s redundancy policy\n", first.DrvName, redundancy(first.NrCopies, first.CopyPolicy))
			if !raw {
				b.WriteString("Cluster vnodes strategy: ")
			}
			if first.Flags&proto.ClusterFlagAutoVnodes != 0 {
				b.WriteString("auto\n")
			} else {
				b.WriteString("fixed\n")
			}
		} else {
			fmt.Fprintf(&b, "%s\n", st.Result)
		}
		if !raw {
			b.WriteString("Cluster vnode mode: ")
		}
		if first.Flags&proto.ClusterFlagDiskMode != 0 {
			b.WriteString("disk\n")
		} else {
			b.WriteString("node\n")
		}
	} else {
		b.WriteString("\n")
	}
	if !raw && st.HasData {
		ct := time.Unix(proto.SheepTimeSeconds(first.Ctime), 0).In(loc)
		fmt.Fprintf(&b, "Cluster created at %s\n\n", ct.Format(ctimeLayout))
		b.WriteString("Epoch Time           Version [Host:Port:V-Nodes,,,]\n")
	}
	for i, l := range st.Logs {
		if raw {
			fmt.Fprintf(&b, "%d %d", l.Time, l.Epoch)
		} else {
			fmt.Fprintf(&b, "%s %6d", time.Unix(int64(l.Time), 0).In(loc).Format(epochTimeLayout), l.Epoch)
		}
		b.WriteString(" [")
		switch {
		case !diff:
			for j, n := range l.Nodes {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%s:%d", n.NodeID.String(), n.NrVnodes)
			}
		case i == len(st.Logs)-1:
			b.WriteString("formated")
		default:
			b.WriteString(nodesDiff(l.Nodes, st.Logs[i+1].Nodes))
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// nodesDiff lists "+h:p" for nodes of cur missing from prev, then "-h:p"
// for nodes of prev missing from cur.
func nodesDiff(cur, prev []proto.Node) string {
	var parts []string
	missing := func(a, b []proto.Node, act string) {
		for _, x := range a {
			found := false
			for _, y := range b {
				if x.Same(y.NodeID) {
					found = true
					break
				}
			}
			if !found {
				parts = append(parts, act+x.NodeID.String())
			}
		}
	}
	missing(cur, prev, "+")
	missing(prev, cur, "-")
	return strings.Join(parts, ", ")
}

// progressLine is dog's progress bar for a screen width:
// "%5.1f %% [===>   ] done / total" padded with blanks to the width.
func progressLine(done, total uint64, width int) string {
	if width <= 30 {
		width = 80
	}
	barLen := width - 30
	pct := 100.0
	if total > 0 {
		pct = float64(done) / float64(total) * 100
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%5.1f %% [", pct)
	for i := uint64(0); i < uint64(barLen); i++ {
		switch {
		case total*(i+1)/uint64(barLen) <= done:
			b.WriteByte('=')
		case total*i/uint64(barLen) <= done && done < total*(i+1)/uint64(barLen):
			b.WriteByte('>')
		default:
			b.WriteByte(' ')
		}
	}
	fmt.Fprintf(&b, "] %s / %s", strnumber(done, false), strnumber(total, false))
	s := b.String()
	if len(s) > width {
		return s[:width]
	}
	return padRight(s, width)
}
