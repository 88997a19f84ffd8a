package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// Disks is this node's disks (md.Store): `dog node md info|plug|unplug`.
type Disks interface {
	Info() []md.DiskInfo
	Plug(paths []string) error
	Unplug(paths []string) error
}

var _ Disks = (*md.Store)(nil)

// mdInfo is MD_INFO: struct sd_md_info, the disks in path order.
func (h *Handler) mdInfo(_ context.Context, c *call) error {
	if h.cfg.Disks == nil {
		return proto.ResNoSupport
	}
	info := h.cfg.Disks.Info()
	disks := make([]proto.MdDisk, len(info))
	for i, d := range info {
		disks[i] = proto.MdDisk{Index: int32(d.Index), Free: d.Free, Used: d.Used, Path: d.Path}
	}
	c.out = proto.MarshalMdInfo(disks)
	return nil
}

// mdPlug is MD_PLUG and MD_UNPLUG (plug false): the payload lists the
// directories, comma-separated. The objects move in the background; the
// reply says only that the disk set changed (UNKNOWN when it did not, as
// in Sheepdog; sheep.log says why).
func (h *Handler) mdPlug(plug bool) func(context.Context, *call) error {
	return func(_ context.Context, c *call) error {
		if h.cfg.Disks == nil {
			return proto.ResNoSupport
		}
		paths := md.SplitPaths(c.data)
		if len(paths) == 0 {
			return fmt.Errorf("no disk given: %w", proto.ResInvalidParms)
		}
		if plug {
			return h.cfg.Disks.Plug(paths)
		}
		return h.cfg.Disks.Unplug(paths)
	}
}
