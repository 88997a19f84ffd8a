package main

import (
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// mdSubcommands are "node md"'s, as dog lists them.
var mdSubcommands = []struct{ name, desc string }{
	{"info", "show multi-disk information"},
	{"plug", "plug more disk(s) into node"},
	{"unplug", "unplug disk(s) from node"},
}

// The cautions dog asks to confirm, unless -f.
const (
	mdPlugCaution = "    __\n" +
		"   ()'`;\n" +
		"   /\\|`\n" +
		"  /  |   Caution! The directories to be plugged will be purged.\n" +
		"(/_)_|_  Are you sure you want to continue? [yes/no]: "
	mdUnplugCaution = "    __\n" +
		"   ()'`;\n" +
		"   /\\|`\n" +
		"  /  |   Caution! Recovery will be triggered after unplugging.\n" +
		"(/_)_|_  Are you sure you want to continue? [yes/no]: "
)

// nodeMd is "node md {info|plug|unplug}" (dog's node_md): info lists the
// disks of the sheep named by -a/-p, or of every node with -A; plug and
// unplug send the comma-separated directories to that sheep.
func nodeMd(s *session, args []string) error {
	switch args[0] {
	case "info":
		return nodeMdInfo(s)
	case "plug", "unplug":
		if len(args) < 2 {
			return &exitError{code: exitUsage, usage: true}
		}
		plug := args[0] == "plug"
		caution, op := mdUnplugCaution, proto.OpMdUnplug
		if plug {
			caution, op = mdPlugCaution, proto.OpMdPlug
		}
		if !s.opts.force && !s.confirm(caution) {
			return nil
		}
		req := proto.NewRequest(op)
		req.Flags |= proto.FlagCmdWrite
		rsp, _, err := s.do(&req, append([]byte(args[1]), 0), nil)
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess {
			return failf(exitFailure, "Failed to execute request, look for sheep.log for more information")
		}
		return nil
	}
	return &exitError{code: exitFailure, usage: true}
}

// nodeMdInfo prints dog's table: a header, then one row per disk (with
// -A a "Node N:" line before each node's rows); -r prints "ADDR idx size
// used avail use% path" rows without the header.
func nodeMdInfo(s *session) error {
	if !s.opts.raw {
		s.out.WriteString("Id\tSize\tUsed\tAvail\tUse%\tPath\n")
	}
	if !s.opts.all {
		c, err := s.client()
		if err != nil {
			return err
		}
		return mdInfoOf(s, c, s.addr())
	}
	if err := s.updateNodeList(); err != nil {
		return err
	}
	for i, n := range s.nodes {
		if !s.opts.raw {
			fmt.Fprintf(s.out, "Node %d:\n", i)
		}
		if err := s.onNode(n, func(c *client.Client) error { return mdInfoOf(s, c, nodeAddr(n)) }); err != nil {
			return err
		}
	}
	return nil
}

func mdInfoOf(s *session, c *client.Client, addr string) error {
	req := proto.NewRequest(proto.OpMdInfo)
	buf := make([]byte, proto.MdInfoSize)
	rsp, n, err := doOn(s.ctx, c, &req, nil, buf)
	if err != nil {
		return failf(exitSysfail, "%v", err)
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "failed to get multi-disk information: %s", rsp.Result)
	}
	disks, err := proto.UnmarshalMdInfo(buf[:n])
	if err != nil {
		return failf(exitFailure, "failed to get multi-disk information: %v", err)
	}
	for _, d := range disks {
		size := d.Free + d.Used
		ratio := 0
		if size > 0 {
			ratio = int(float64(d.Used) / float64(size) * 100)
		}
		if s.opts.raw {
			fmt.Fprintf(s.out, "%s %d %s %s %s %d%% %s\n", addr, d.Index, strnumber(size, true),
				strnumber(d.Used, true), strnumber(d.Free, true), ratio, d.Path)
		} else {
			fmt.Fprintf(s.out, "%2d\t%s\t%s\t%s\t%3d%%\t%s\n", d.Index, strnumber(size, false),
				strnumber(d.Used, false), strnumber(d.Free, false), ratio, d.Path)
		}
	}
	return nil
}
