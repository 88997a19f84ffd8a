package main

import (
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// nodeList lists the nodes of the current epoch (the membership the
// cluster decided). With -v it also lists the nodes failure detection sees
// alive now (GET_GOSSIP_NODES), which differ while a join or a failure is
// not committed yet, or when no quorum is left to commit it.
func nodeList(s *session, _ []string) error {
	if !s.opts.raw {
		s.out.WriteString(nodeListHeader)
	}
	for i, n := range s.nodes {
		s.out.WriteString(formatNodeRow(i, n, s.opts.raw))
	}
	if !s.opts.verbose {
		return nil
	}
	req := proto.NewRequest(proto.OpGetGossipNodes)
	buf := make([]byte, proto.MaxNodes*proto.NodeSize)
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Failed to get the gossip view: %s", rsp.Result)
	}
	nodes, err := proto.UnmarshalNodes(buf[:n], int(rsp.Node().NrNodes))
	if err != nil {
		return failf(exitFailure, "Bad gossip view: %v", err)
	}
	s.out.WriteString("\nAlive (gossip, not yet decided):\n")
	if !s.opts.raw {
		s.out.WriteString(nodeListHeader)
	}
	for i, n := range nodes {
		s.out.WriteString(formatNodeRow(i, n, s.opts.raw))
	}
	return nil
}

// nodeInfo is dog's node_info: STAT_SHEEP on every node, then the sum of
// the sizes of the working (non-snapshot) VDIs.
func nodeInfo(s *session, _ []string) error {
	raw := s.opts.raw
	if !raw {
		s.out.WriteString(nodeInfoHeader)
	}
	var totalSize, totalFree uint64
	var failures []string
	row := 0
	for _, n := range s.nodes {
		var st proto.NodeRsp
		err := s.onNode(n, func(c *client.Client) error {
			req := proto.NewRequest(proto.OpStatSheep)
			rsp, _, err := doOn(s.ctx, c, &req, nil, nil)
			if err != nil {
				return err
			}
			if rsp.Result != proto.ResSuccess {
				return rsp.Result
			}
			st = rsp.Node()
			return nil
		})
		if err != nil {
			var ee *exitError
			msg := err.Error()
			if errors.As(err, &ee) {
				msg = ee.msg
			}
			failures = append(failures, fmt.Sprintf("%s: %s", n.NodeID, msg))
			continue
		}
		s.out.WriteString(formatNodeInfoRow(row, st.StoreSize, st.StoreFree, raw))
		row++
		totalSize += st.StoreSize
		totalFree += st.StoreFree
	}
	if row == 0 {
		if len(failures) == 1 {
			return failf(exitSysfail, "Cannot get information from any nodes (%s)", failures[0])
		}
		return failf(exitSysfail, "Cannot get information from any nodes")
	}
	s.out.Flush()
	for _, f := range failures {
		fmt.Fprintf(s.stderr, "Failed to get information from %s\n", f)
	}
	scans, err := s.scanVdis(false, "", 0)
	if err != nil {
		return err
	}
	var vdiSize uint64
	for _, r := range scans {
		if r.ino != nil && !r.ino.IsSnapshot() {
			vdiSize += r.ino.VdiSize
		}
	}
	s.out.WriteString(formatNodeInfoTotal(totalSize, totalFree, vdiSize, raw))
	s.nodeCacheInfo(raw)
	if len(failures) > 0 {
		return &exitError{code: exitFailure}
	}
	return nil
}

// nodeRecovery lists the nodes that are recovering (dog's "node recovery"
// without a subcommand).
func nodeRecovery(s *session, _ []string) error {
	raw := s.opts.raw
	if !raw {
		s.out.WriteString(recoveryHeader)
	}
	for i, n := range s.nodes {
		var st proto.RecoveryState
		err := s.onNode(n, func(c *client.Client) error {
			req := proto.NewRequest(proto.OpStatRecovery)
			buf := make([]byte, proto.RecoveryStateSize)
			rsp, _, err := doOn(s.ctx, c, &req, nil, buf)
			if err != nil {
				return err
			}
			if rsp.Result != proto.ResSuccess {
				return failf(exitFailure, "%s", rsp.Result)
			}
			return st.Unmarshal(buf)
		})
		if err != nil {
			return err
		}
		if st.InRecovery {
			s.out.WriteString(formatRecoveryRow(i, n, st, raw))
		}
	}
	return nil
}

// nodeCacheInfo adds a line per node whose object cache is on (sheep -w;
// GET_CACHE_INFO with a nonzero size), after dog's table: its size, use
// and the objects it holds not yet flushed. Nodes without one print
// nothing, so the table stays dog's.
func (s *session) nodeCacheInfo(raw bool) {
	for i, n := range s.nodes {
		var ci proto.CacheInfo
		err := s.onNode(n, func(c *client.Client) error {
			req := proto.NewRequest(proto.OpGetCacheInfo)
			buf := make([]byte, proto.CacheInfoSize)
			rsp, _, err := doOn(s.ctx, c, &req, nil, buf)
			if err != nil {
				return err
			}
			if rsp.Result != proto.ResSuccess {
				return rsp.Result
			}
			return ci.Unmarshal(buf)
		})
		if err != nil || ci.Size == 0 {
			continue
		}
		dirty, total := 0, 0
		for _, v := range ci.Vdis {
			dirty += int(v.Dirty)
			total += int(v.Total)
		}
		fmt.Fprintf(s.out, "Object cache on node %d (%s): size %s, used %s, %d objects, %d dirty\n",
			i, n.NodeID, strnumber(ci.Size, raw), strnumber(ci.Used, raw), total, dirty)
	}
}
