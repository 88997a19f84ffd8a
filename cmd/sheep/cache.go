package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/objcache"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// cacheOptions are sheep 0.x's -w size=SIZE[,dir=PATH][,directio]: the
// object cache (core/objcache).
type cacheOptions struct {
	Size     int64
	Dir      string // default DIR/cache
	DirectIO bool
}

// isCacheOptions reports whether a -w value is the object cache's options
// rather than Sheepdog 1.0's work queue threads.
func isCacheOptions(v string) bool {
	for _, kv := range strings.Split(v, ",") {
		if strings.HasPrefix(kv, "size=") || strings.HasPrefix(kv, "dir=") || kv == "directio" {
			return true
		}
	}
	return false
}

// parseCacheOptions reads a -w value that isCacheOptions; storeDir gives
// the default dir.
func parseCacheOptions(v, storeDir string) (*cacheOptions, error) {
	o := &cacheOptions{Dir: filepath.Join(storeDir, "cache")}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "size":
			// Sheepdog's bounds and message (sheep.c cache_size_parser).
			n, err := parseBytes(val)
			if err != nil || n < 10<<20 || n > (1<<32)<<20 {
				return nil, usagef("Invalid cache option '%s': size must be between between 10M and 4194304G", val)
			}
			o.Size = n
		case "dir":
			if val == "" {
				return nil, usagef("Invalid cache option '%s': dir needs a path", kv)
			}
			o.Dir = val
		case "directio":
			o.DirectIO = true
		default:
			return nil, usagef("Invalid cache option '%s' (size=SIZE[,dir=PATH][,directio])", kv)
		}
	}
	if o.Size == 0 {
		return nil, usagef("Invalid cache option '%s': size=SIZE is required", v)
	}
	return o, nil
}

// cacheBackend is the NBD front-end's object layer, and what the object
// cache pushes to: the quorum-gated gateway, with writes into an inode's
// data_vdi_id table going through core/vdi, which drops the references
// they replace (as the native handler's table writes do without a cache).
type cacheBackend struct {
	quorumObjects
	vdis *vdi.Service
}

// The NBD reader serves cached reads itself only through a TryReader
// (nbd's readInline): keep the gateway's TryReadObject visible.
var _ volume.TryReader = cacheBackend{}

func (b cacheBackend) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if _, _, ok := vdi.TableRange(oid, off, len(data)); ok {
		if err := cluster.AwaitQuorum(ctx, b.cl); err != nil {
			return err
		}
		return b.vdis.WriteTable(ctx, oid, off, data, flags)
	}
	return b.quorumObjects.WriteObject(ctx, oid, off, data, flags)
}

// describeObjects tells the cache an object's size from the cluster state;
// a snapshot's data objects are READONLY and its inode goes through (its
// table gains no references: core/vdi judges).
func describeObjects(cl cluster.Driver) objcache.Describe {
	return func(ctx context.Context, oid uint64) (int64, bool, error) {
		vid := proto.OidToVid(oid)
		look := func() (v proto.VdiState, known bool, shift uint8) {
			cl.View(func(s *cluster.State) {
				shift = s.BlockSizeShift
				if p := s.VdiState(vid); p != nil {
					v, known = *p, true
					if p.BlockSizeShift != 0 {
						shift = p.BlockSizeShift
					}
				}
			})
			return
		}
		v, known, shift := look()
		if !known {
			cl.Sync(ctx) // created through another node a moment ago
			v, known, shift = look()
		}
		size := proto.ObjectSize(oid, shift)
		switch {
		case !known:
			return size, false, nil // the replicas answer for it
		case v.Snapshot && !proto.IsVdiObj(oid):
			return 0, false, fmt.Errorf("%016x: %w", oid, proto.ResReadonly)
		case v.Snapshot:
			return size, false, nil
		}
		return size, true, nil
	}
}

// cachedObjects is the native handler's object layer with the cache on:
// reads and writes through the cache, the rest from the gateway.
type cachedObjects struct {
	*objcache.Cache
	gw *gateway.Gateway
}

func (c cachedObjects) Holds(ctx context.Context, oid uint64) bool { return c.gw.Holds(ctx, oid) }
func (c cachedObjects) Peers() *gateway.Peers                      { return c.gw.Peers() }
