package main

import (
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// "vdi cache {flush|delete|info|purge}" manage the object cache of the
// node collie talks to (sheep -w), as dog 0.x's did (dog/vdi.c,
// docs/protocol.md §6).

// cacheSubcommands are dog 0.x's vdi_cache_cmd, in its order.
var cacheSubcommands = []struct {
	name, args, desc string
	needArg          bool
	run              func(s *session, args []string) error
}{
	{"flush", "<vdiname>", "flush the cache of the vdi specified.", true, vdiCacheFlush},
	{"delete", "<vdiname>", "delete the cache of the vdi specified in all nodes.", true, vdiCacheDelete},
	{"info", "", "show usage of the cache", false, vdiCacheInfo},
	{"purge", "", "purge the cache of all vdi (no flush)", false, vdiCachePurge},
}

// vdiCache dispatches "vdi cache SUBCOMMAND".
func vdiCache(s *session, args []string) error {
	for _, sub := range cacheSubcommands {
		if sub.name != args[0] {
			continue
		}
		if sub.needArg && (len(args) < 2 || args[1] == "") {
			return failf(exitFailure, "please specify VDI name")
		}
		return sub.run(s, args[1:])
	}
	return &exitError{code: exitFailure, usage: true}
}

// cacheVdi finds the VDI a cache subcommand names (-s/-T select a
// snapshot, as dog's find_vdi_name).
func (s *session) cacheVdi(name string) (uint32, error) {
	vid, res, err := s.findVdi(name, s.opts.snapID, s.opts.snapTag)
	if err != nil {
		return 0, err
	}
	if res != proto.ResSuccess {
		return 0, failf(exitFailure, "Failed to open VDI %s (snapshot id: %d snapshot tag: %s): %s", name, s.opts.snapID, s.opts.snapTag, res)
	}
	return vid, nil
}

// cacheOp sends op for vid's inode oid to the node collie talks to.
func (s *session) cacheOp(op proto.Opcode, vid uint32, flags uint16) error {
	req := proto.NewRequest(op)
	req.Flags |= flags
	req.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(vid)})
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "failed to execute request")
	}
	return nil
}

// vdiCacheFlush is FLUSH_VDI: the node pushes the VDI's dirty objects.
func vdiCacheFlush(s *session, args []string) error {
	vid, err := s.cacheVdi(args[0])
	if err != nil {
		return err
	}
	return s.cacheOp(proto.OpFlushVdi, vid, 0)
}

// vdiCacheDelete is DELETE_CACHE: every node drops what it caches of the
// VDI, unflushed writes included.
func vdiCacheDelete(s *session, args []string) error {
	vid, err := s.cacheVdi(args[0])
	if err != nil {
		return err
	}
	return s.cacheOp(proto.OpDeleteCache, vid, 0)
}

// vdiCachePurge is CACHE_PURGE: one VDI's cache, or after a confirmation
// the whole cache of the node, dropped without a flush.
func vdiCachePurge(s *session, args []string) error {
	if len(args) > 0 && args[0] != "" {
		vid, err := s.cacheVdi(args[0])
		if err != nil {
			return err
		}
		return s.cacheOp(proto.OpCachePurge, vid, proto.FlagCmdWrite)
	}
	if !s.confirm("This operation purges the cache of all the vdi. Continue? [yes/no]: ") {
		return nil
	}
	req := proto.NewRequest(proto.OpCachePurge)
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "failed to execute request")
	}
	return nil
}

// getCacheInfo is GET_CACHE_INFO on the node collie talks to.
func (s *session) getCacheInfo() (proto.CacheInfo, error) {
	var ci proto.CacheInfo
	req := proto.NewRequest(proto.OpGetCacheInfo)
	buf := make([]byte, proto.CacheInfoSize)
	rsp, _, err := s.do(&req, nil, buf)
	if err != nil {
		return ci, err
	}
	if rsp.Result != proto.ResSuccess {
		return ci, failf(exitFailure, "failed to get cache information: %s", rsp.Result)
	}
	if err := ci.Unmarshal(buf); err != nil {
		return ci, failf(exitFailure, "failed to get cache information: %v", err)
	}
	return ci, nil
}

// vdiCacheInfo prints dog's table: per VDI the cached, dirty and clean
// objects (as sizes of 4 MiB objects, as dog counts them), then the
// cache's size and use.
func vdiCacheInfo(s *session, _ []string) error {
	ci, err := s.getCacheInfo()
	if err != nil {
		return err
	}
	const objSize = 1 << proto.DefaultBlockSizeShift
	s.out.WriteString("Name\tTag\tTotal\tDirty\tClean\n")
	for _, v := range ci.Vdis {
		ino, err := s.readInode(v.Vid, false)
		if err != nil {
			return failf(exitFailure, "failed to read the inode of vdi %x: %v", v.Vid, err)
		}
		total, dirty := uint64(v.Total)*objSize, uint64(v.Dirty)*objSize
		fmt.Fprintf(s.out, "%s\t%s\t%s\t%s\t%s\n", ino.Name, ino.Tag, strnumber(total, false), strnumber(dirty, false), strnumber(total-dirty, false))
	}
	mode := "non-directio"
	if ci.DirectIO {
		mode = "directio"
	}
	fmt.Fprintf(s.out, "\nCache size %s, used %s, %s\n", strnumber(ci.Size, false), strnumber(ci.Used, false), mode)
	return nil
}
