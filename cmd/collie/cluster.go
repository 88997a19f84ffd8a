package main

import (
	"bufio"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// statCluster is STAT_CLUSTER sized for the session's epoch and node
// count, doubling the node room while the sheep answers BUFFER_SMALL.
func (s *session) statCluster() (clusterStat, error) {
	nodesNr := max(len(s.nodes), 1)
	for {
		rec := proto.EpochLogHeaderSize + nodesNr*proto.NodeSize
		req := proto.NewRequest(proto.OpStatCluster)
		req.SetCluster(proto.ClusterArgs{NodesNr: uint32(nodesNr)})
		buf := make([]byte, int(s.epoch)*rec)
		if s.epoch == 0 {
			buf = nil
		}
		rsp, n, err := s.do(&req, nil, buf)
		if err != nil {
			return clusterStat{}, err
		}
		if rsp.Result == proto.ResBufferSmall && nodesNr < proto.MaxNodes {
			nodesNr *= 2
			continue
		}
		st := clusterStat{Result: rsp.Result, HasData: rsp.DataLength > 0}
		for off := 0; off+rec <= n; off += rec {
			var l proto.EpochLog
			if err := l.Unmarshal(buf[off:off+rec], nodesNr); err != nil {
				return clusterStat{}, failf(exitSysfail, "bad epoch log from %s: %v", displayAddr(s.addr()), err)
			}
			st.Logs = append(st.Logs, l)
		}
		return st, nil
	}
}

func clusterInfo(s *session, _ []string) error {
	st, err := s.statCluster()
	if err != nil {
		return err
	}
	s.out.WriteString(formatClusterInfo(st, s.opts.verbose, s.opts.raw, s.opts.diff, time.Local))
	return nil
}

// confirm asks a yes/no question on stdout; anything but "yes" ends the
// command successfully without doing anything, as dog does.
func (s *session) confirm(question string) bool {
	s.out.WriteString(question)
	s.out.Flush()
	if s.stdinLines == nil {
		s.stdinLines = bufio.NewReader(s.stdin)
	}
	line, _ := s.stdinLines.ReadString('\n')
	return len(line) >= 3 && strings.EqualFold(line[:3], "yes")
}

const formatCaution = "    __\n" +
	"   ()'`;\n" +
	"   /\\|`\n" +
	"  /  |   Caution! The cluster is not empty.\n" +
	"(/_)_|_  Are you sure you want to continue? [yes/no]: "

func clusterFormat(s *session, _ []string) error {
	o := s.opts
	// Every storing node must agree with the vnode strategy asked for.
	for _, n := range s.nodes {
		var ci proto.ClusterInfo
		err := s.onNode(n, func(c *client.Client) error {
			req := proto.NewRequest(proto.OpClusterInfo)
			buf := make([]byte, proto.ClusterInfoSize)
			rsp, _, err := doOn(s.ctx, c, &req, nil, buf)
			if err != nil {
				return err
			}
			if rsp.Result != proto.ResSuccess {
				return failf(exitFailure, "%s", rsp.Result)
			}
			if err := ci.Unmarshal(buf); err != nil {
				return failf(exitFailure, "bad cluster info from %s: %v", n.NodeID, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n.NrVnodes == 0 {
			continue
		}
		auto := ci.Flags&proto.ClusterFlagAutoVnodes != 0
		if auto && o.fixedVnodes {
			return failf(exitFailure, "Can not apply the option of '-V', because there are vnode strategy of sheep is auto in the cluster")
		}
		// A sheep reports AUTO_VNODES from start-up unless started with
		// -V, and once formatted as the format chose.
		if !auto && !o.fixedVnodes {
			return failf(exitFailure, "Need to specify the option of '-V', because there are vnode strategy of sheep is fixed in the cluster")
		}
	}
	if int(o.copies) > s.zones {
		q := fmt.Sprintf("Number of copies (%d) is larger than number of zones (%d).\n"+
			"Are you sure you want to continue? [yes/no]: ", o.copies, s.zones)
		if !s.confirm(q) {
			return nil
		}
	}
	inuse, err := s.readBitmap(proto.OpReadVdis)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(inuse, func(b byte) bool { return b != 0 }) && !o.force {
		if !s.confirm(formatCaution) {
			return nil
		}
	}

	req := proto.NewRequest(proto.OpMakeFS)
	flags := uint16(0)
	if o.strict {
		flags |= proto.ClusterFlagStrict
	}
	if o.useLock {
		flags |= proto.ClusterFlagUseLock
	}
	if o.recycleVid {
		flags |= proto.ClusterFlagRecycleVid
	}
	if !o.fixedVnodes {
		flags |= proto.ClusterFlagAutoVnodes
	}
	if o.avoidDiskfull {
		flags |= proto.ClusterFlagAvoidDiskfull
	}
	now := time.Now()
	req.SetCluster(proto.ClusterArgs{
		Ctime:  uint64(now.Unix())<<32 | uint64(now.Nanosecond()/1000*1000),
		Copies: o.copies, CopyPolicy: o.copyPolicy, Flags: flags, BlockSizeShift: o.blockSizeShift,
	})
	store := o.store
	if store == "" {
		store = "plain"
	}
	if len(store) > 15 {
		store = store[:15] // STORE_LEN is 16 with the NUL
	}
	fmt.Fprintf(s.out, "using backend %s store\n", store)
	s.out.Flush()
	rsp, _, err := s.do(&req, append([]byte(store), 0), nil)
	if err != nil {
		return err
	}
	switch rsp.Result {
	case proto.ResSuccess:
		return nil
	case proto.ResNoStore:
		return s.listStores(rsp.Result)
	}
	return failf(exitSysfail, "Format failed: %s", rsp.Result)
}

// listStores follows a NO_STORE format failure with the sheep's stores.
func (s *session) listStores(res proto.Result) error {
	req := proto.NewRequest(proto.OpGetStoreList)
	buf := make([]byte, 512)
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result == proto.ResSuccess {
		list := strings.TrimRight(string(buf[:n]), "\x00")
		fmt.Fprintf(s.out, "Available stores:\n---------------------------------------\n%s\n", list)
	}
	return failf(exitSysfail, "Format failed: %s", res)
}

func clusterShutdown(s *session, _ []string) error {
	req := proto.NewRequest(proto.OpShutdown)
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "failed to execute request: %s", rsp.Result)
	}
	return nil
}
