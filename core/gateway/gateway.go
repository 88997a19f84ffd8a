// Package gateway is the replicated object layer: whichever sheep a client
// talks to reads and writes the object's copies on its behalf. It
// implements the object interface core/volume and core/vdi are written
// against, in-process.
//
// This version serves a single node: every copy is the local store. The
// copy count still comes from the VDI's state, and the checks (READONLY,
// sizes, COW) are the ones the replicated path keeps.
package gateway

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// Gateway reads and writes objects for any VDI.
type Gateway struct {
	store   *store.Store
	cluster cluster.Driver
}

// New returns a gateway over the local store and the cluster state.
func New(st *store.Store, cl cluster.Driver) *Gateway {
	return &Gateway{store: st, cluster: cl}
}

// objectInfo returns the full size of oid and whether writes to it are
// refused because its VDI is a snapshot.
func (g *Gateway) objectInfo(oid uint64) (size int64, readonly bool) {
	vid := proto.OidToVid(oid)
	var shift uint8
	g.cluster.View(func(s *cluster.State) {
		shift = s.BlockSizeShift
		if v := s.VdiState(vid); v != nil {
			if v.BlockSizeShift != 0 {
				shift = v.BlockSizeShift
			}
			// vdi_state.snapshot makes a snapshot's data (and vmstate)
			// objects read-only; its inode stays writable (dog writes the
			// tag after the snapshot exists).
			readonly = v.Snapshot && !proto.IsVdiObj(oid) && !proto.IsAttrObj(oid)
		}
	})
	return proto.ObjectSize(oid, shift), readonly
}

func checkRange(oid uint64, size, off int64, n int) error {
	if off < 0 || off+int64(n) > size {
		return fmt.Errorf("object %016x: range [%d,+%d) outside %d bytes: %w", oid, off, n, size, proto.ResInvalidParms)
	}
	return nil
}

// ReadObject fills buf from oid at off.
func (g *Gateway) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	size, _ := g.objectInfo(oid)
	if err := checkRange(oid, size, off, len(buf)); err != nil {
		return err
	}
	return g.store.ReadAt(ctx, oid, buf, off)
}

// WriteObject writes data into the existing object oid at off. The write is
// on stable storage on every copy when it returns.
func (g *Gateway) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	size, ro := g.objectInfo(oid)
	if ro {
		return fmt.Errorf("write %016x: %w", oid, proto.ResReadonly)
	}
	if err := checkRange(oid, size, off, len(data)); err != nil {
		return err
	}
	return g.store.WriteAt(ctx, oid, data, off, true)
}

// CreateAndWrite creates (or replaces) oid at its full size, zero-filled,
// with data at off. With cowFrom != 0 the object starts as a copy of
// cowFrom instead of zeros.
func (g *Gateway) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	size, ro := g.objectInfo(oid)
	if ro {
		return fmt.Errorf("create %016x: %w", oid, proto.ResReadonly)
	}
	if err := checkRange(oid, size, off, len(data)); err != nil {
		return err
	}
	if cowFrom == 0 {
		return g.store.Create(ctx, oid, size, off, data, true)
	}
	full := make([]byte, size)
	if err := g.ReadObject(ctx, cowFrom, 0, full); err != nil {
		return fmt.Errorf("copy-on-write from %016x: %w", cowFrom, err)
	}
	copy(full[off:], data)
	return g.store.Create(ctx, oid, size, 0, full, true)
}

// RemoveObject removes oid from every copy.
func (g *Gateway) RemoveObject(ctx context.Context, oid uint64) error {
	return g.store.Remove(ctx, oid)
}

// Flush makes every write acknowledged so far stable. Writes through this
// gateway are synchronous, so there is nothing left to do.
func (g *Gateway) Flush(ctx context.Context) error { return ctx.Err() }
