package main

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// nodeRecoveryCmd is "node recovery [info|set-throttle MAX INTERVAL|get-throttle]".
func nodeRecoveryCmd(s *session, args []string) error {
	sub := "info"
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "info":
		if s.opts.progress {
			return recoveryProgress(s)
		}
		return nodeRecovery(s, nil)
	case "set-throttle":
		if len(args) != 3 {
			return usagef("Usage: collie node recovery set-throttle <max> <interval>")
		}
		// dog's checks and messages: max a long in 0..2^32-1, interval
		// a long long ≥ 0 (milliseconds), both zero or neither.
		max, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || max < 0 || max > 1<<32-1 {
			return usagef("Invalid max (%s)", args[1])
		}
		interval, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || interval < 0 {
			return usagef("Invalid interval (%s)", args[2])
		}
		if (max == 0) != (interval == 0) {
			return usagef("Invalid interval max (%d), interval (%d)", max, interval)
		}
		buf := make([]byte, 24)
		binary.LittleEndian.PutUint32(buf[0:], uint32(max))
		binary.LittleEndian.PutUint64(buf[8:], uint64(interval))
		if max > 0 && interval > 0 {
			buf[16] = 1
		}
		for _, n := range s.nodes {
			err := s.onNode(n, func(c *client.Client) error {
				req := proto.NewRequest(proto.OpSetRecovery)
				rsp, _, err := doOn(s.ctx, c, &req, buf, nil)
				if err == nil && rsp.Result != proto.ResSuccess {
					err = failf(exitFailure, "Failed to set recovery throttle on %s: %s", n.NodeID, rsp.Result)
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	case "get-throttle":
		req := proto.NewRequest(proto.OpGetRecovery)
		buf := make([]byte, 24)
		rsp, _, err := s.do(&req, nil, buf)
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess {
			return failf(exitFailure, "Failed to get recovery throttle: %s", rsp.Result)
		}
		max, interval := binary.LittleEndian.Uint32(buf[0:]), binary.LittleEndian.Uint64(buf[8:])
		fmt.Fprintf(s.out, "max (%d), interval (%d)\n", max, interval)
		return nil
	}
	return usagef("Invalid recovery subcommand '%s'", sub)
}

// recoveryProgress draws a bar of the whole cluster's recovery until it
// finishes.
func recoveryProgress(s *session) error {
	for {
		var done, total uint64
		busy := false
		for _, n := range s.nodes {
			var st proto.RecoveryState
			err := s.onNode(n, func(c *client.Client) error {
				req := proto.NewRequest(proto.OpStatRecovery)
				buf := make([]byte, proto.RecoveryStateSize)
				if _, _, err := doOn(s.ctx, c, &req, nil, buf); err != nil {
					return err
				}
				return st.Unmarshal(buf)
			})
			if err != nil {
				return err
			}
			if st.InRecovery {
				busy = true
				done += st.NrFinished
				total += st.NrTotal
			}
		}
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		width := 50
		fill := int(pct / 100 * float64(width))
		fmt.Fprintf(s.stderr, "\r%5.1f %% [%s%s] %d/%d", pct, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), done, total)
		if !busy {
			fmt.Fprintln(s.stderr)
			return nil
		}
		time.Sleep(time.Second)
	}
}

// nodeKill sends KILL_NODE to the node with that index (or -l: the one
// collie talks to).
func nodeKill(s *session, args []string) error {
	target := s.addr()
	if !s.opts.local {
		if len(args) != 1 {
			return usagef("Usage: collie node kill <node id>")
		}
		id, err := strconv.Atoi(args[0])
		if err != nil || id < 0 || id >= len(s.nodes) {
			return failf(exitUsage, "Invalid node id '%s'", args[0])
		}
		target = nodeAddr(s.nodes[id])
	}
	c, err := s.dial(target)
	if err != nil {
		return err
	}
	defer c.Close()
	req := proto.NewRequest(proto.OpKillNode)
	rsp, _, err := doOn(s.ctx, c, &req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Failed to execute request: %s", rsp.Result)
	}
	return nil
}

// clusterRecover is "cluster recover force|enable|disable".
func clusterRecover(s *session, args []string) error {
	switch args[0] {
	case "force":
		if !s.opts.force && !s.confirm("Caution! Please try starting all the cluster nodes normally before\n"+
			"running this command.\n\nThe cluster may need to be force recovered if:\n"+
			"  - the master node fails to start because of epoch mismatch; or\n"+
			"  - some nodes fail to start after a cluster shutdown.\n\n"+
			"Are you sure you want to continue? [yes/no]: ") {
			return nil
		}
		req := proto.NewRequest(proto.OpForceRecover)
		rsp, _, err := s.do(&req, nil, make([]byte, proto.MaxNodes*proto.NodeSize))
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess {
			return failf(exitFailure, "failed to execute request, %s", rsp.Result)
		}
		return nil
	case "enable", "disable":
		op := proto.OpEnableRecover
		if args[0] == "disable" {
			op = proto.OpDisableRecover
		}
		req := proto.NewRequest(op)
		rsp, _, err := s.do(&req, nil, nil)
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess {
			return failf(exitFailure, "Failed to %s recovery: %s", args[0], rsp.Result)
		}
		fmt.Fprintf(s.out, "Cluster recovery: %s\n", args[0])
		return nil
	}
	return usagef("Invalid cluster recover subcommand '%s'", args[0])
}
