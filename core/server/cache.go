package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sheepdog-go/sheepdog/core/objcache"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// Cache is this node's object cache (objcache.Cache). With it on, the
// Gateway a Handler is given is the cache over the gateway, clients'
// CACHE flags are kept, and FLUSH_VDI flushes.
type Cache interface {
	FlushVdi(ctx context.Context, vid uint32) error
	Drop(vid uint32)
	Purge()
	Info() objcache.Info
}

var _ Cache = (*objcache.Cache)(nil)

// clientFlags are the flags of a client's object request as passed to the
// gateway. Without an object cache CACHE is dropped: FLUSH_VDI then
// answers INVALID_PARMS and QEMU, which sets CACHE by default, stops
// flushing, so a client's write must be stable when it is acknowledged
// (docs/design.md §7 "Durability").
func (h *Handler) clientFlags(c *call) uint16 {
	if h.cfg.Cache != nil {
		return c.req.Flags
	}
	return c.req.Flags &^ proto.FlagCmdCache
}

// flushVdi is FLUSH_VDI (obj.oid = the inode's oid): every dirty object
// of the VDI this node's cache holds is pushed to every copy, synced,
// before the answer. Without a cache it answers INVALID_PARMS as Sheepdog
// v1.0 does: every acknowledged write is already stable, and the answer
// tells QEMU to stop sending flushes.
func (h *Handler) flushVdi(ctx context.Context, c *call) error {
	if h.cfg.Cache == nil {
		return proto.ResInvalidParms
	}
	return h.cfg.Cache.FlushVdi(ctx, proto.OidToVid(c.req.Obj().Oid))
}

// flushDelCache is FLUSH_DEL_CACHE (sheepfs's unmount): flush, then drop.
func (h *Handler) flushDelCache(ctx context.Context, c *call) error {
	return h.cacheFlushHere(ctx, proto.OidToVid(c.req.Obj().Oid), false)
}

// deleteCache is DELETE_CACHE (dog vdi cache delete): every node drops
// what it caches of the VDI, dirty objects included.
func (h *Handler) deleteCache(ctx context.Context, c *call) error {
	return h.cacheFlushEverywhere(ctx, proto.OidToVid(c.req.Obj().Oid), true, true)
}

// getCacheInfo is GET_CACHE_INFO: object_cache_info (size 0: no cache).
func (h *Handler) getCacheInfo(_ context.Context, c *call) error {
	if err := c.needOut(proto.CacheInfoSize); err != nil {
		return err
	}
	var ci proto.CacheInfo
	if h.cfg.Cache != nil {
		in := h.cfg.Cache.Info()
		ci = proto.CacheInfo{Size: uint64(in.Size), Used: uint64(in.Used), DirectIO: in.DirectIO}
		for _, v := range in.Vdis {
			ci.Vdis = append(ci.Vdis, proto.CacheVdi{Vid: v.Vid, Dirty: uint32(v.DirtyObjects), Total: uint32(v.Objects)})
		}
	}
	c.out = ci.Marshal()
	return nil
}

// cachePurge is CACHE_PURGE: with a VDI (WRITE flag, obj.oid) its cache,
// else the whole cache, is dropped without a flush.
func (h *Handler) cachePurge(_ context.Context, c *call) error {
	if h.cfg.Cache == nil {
		return nil
	}
	if c.req.Flags&proto.FlagCmdWrite != 0 {
		h.cfg.Cache.Drop(proto.OidToVid(c.req.Obj().Oid))
	} else {
		h.cfg.Cache.Purge()
	}
	return nil
}

// cacheFlushPeer is OpCacheFlushPeer from another node.
func (h *Handler) cacheFlushPeer(ctx context.Context, c *call) error {
	return h.cacheFlushHere(ctx, proto.OidToVid(c.req.Obj().Oid), c.req.Flags&proto.FlagCacheDropOnly != 0)
}

// cacheFlushHere pushes (unless dropOnly) and then drops what this node's
// cache holds of vid.
func (h *Handler) cacheFlushHere(ctx context.Context, vid uint32, dropOnly bool) error {
	if h.cfg.Cache == nil {
		return nil
	}
	if !dropOnly {
		if err := h.cfg.Cache.FlushVdi(ctx, vid); err != nil {
			return err
		}
	}
	h.cfg.Cache.Drop(vid)
	return nil
}

// Coherence. The cache serves one writer per VDI, on the node it talks
// to. An operation that reads or changes the VDI as a whole through any
// node (snapshot, clone, delete, rollback, which is a delete and a
// clone, and an inode header write such as a resize) first has every
// node push and forget what its cache holds of the VDI, as Sheepdog's dog
// flushed before a snapshot; that way a snapshot holds what the guest
// wrote, and no cache keeps an inode older than the one the operation
// wrote. A node that cannot be reached is passed over (logged): its cache
// is out of reach, as after a crash. A node that answers INVALID_PARMS
// predates the op and has no cache.

// cacheFlushWait bounds how long a node has to push what it caches of a
// VDI (at 50 MiB/s, 6 GiB).
const cacheFlushWait = 2 * time.Minute

// cacheFlushEverywhere runs OpCacheFlushPeer for vid on every member
// (with self, on this node too), in parallel.
func (h *Handler) cacheFlushEverywhere(ctx context.Context, vid uint32, dropOnly, self bool) error {
	nodes := h.cfg.Members()
	return fanout.Run(len(nodes), 0, func(i int) error {
		n := nodes[i]
		if n.Same(h.cfg.Self.NodeID) {
			if !self {
				return nil
			}
			return h.cacheFlushHere(ctx, vid, dropOnly)
		}
		r := proto.NewRequest(proto.OpCacheFlushPeer)
		r.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(vid)})
		if dropOnly {
			r.Flags |= proto.FlagCacheDropOnly
		}
		cctx, cancel := context.WithTimeout(ctx, cacheFlushWait)
		defer cancel()
		_, _, err := h.cfg.Gateway.Peers().Call(cctx, n.NodeID.String(), &r, nil, nil)
		var res proto.Result
		switch {
		case err == nil, errors.Is(err, proto.ResInvalidParms):
			return nil
		case !errors.As(err, &res) || res == proto.ResNetworkError:
			// Not reached, or gone meanwhile: its cache is out of reach.
			h.cfg.Log.Warn("object cache: node not reached for a flush of the VDI", "node", n.NodeID.String(), "vid", fmt.Sprintf("%x", vid), "err", err)
			return nil
		}
		return fmt.Errorf("flush the caches of vdi %x: %w", vid, err)
	})
}

// isHeaderWrite reports a write into an inode's header (before its
// data_vdi_id table): a resize, a tag, as collie and QEMU write them.
func isHeaderWrite(oid uint64, off int64) bool {
	return proto.IsVdiObj(oid) && off < proto.DataVdiIDOffset
}
