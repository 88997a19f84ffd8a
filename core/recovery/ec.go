package recovery

// Recovery of erasure-coded objects (docs/protocol.md §7). A node holds strip i
// of such an object when it is the i-th node of the object's placement;
// the strip is the file <oid>_<i> (store key proto.StripKey). A strip this
// node should hold and lacks is copied from the node that held strip i in
// an earlier epoch, or, when none has it, rebuilt from any d other strips
// of the object (each read from the nodes that held that strip, current
// epoch first).

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
)

// holdsKey reports whether ring places the store key key on self: an
// object among its copies, a strip at its index.
func holdsKey(ring *placement.Ring, key uint64, copies int, self proto.NodeID) bool {
	oid, i, strip := proto.SplitKey(key)
	if !strip {
		return ring.Holds(oid, copies, self)
	}
	t := ring.Locate(oid, copies)
	return i < len(t) && t[i].Addr == self.Addr && t[i].Port == self.Port
}

// stripIndex is the index of the strip of oid ring places on self, or -1.
func stripIndex(ring *placement.Ring, oid uint64, copies int, self proto.NodeID) int {
	for i, n := range ring.Locate(oid, copies) {
		if n.Addr == self.Addr && n.Port == self.Port {
			return i
		}
	}
	return -1
}

// stripHolders is where strip i of oid lived, current epoch first, then
// past epochs newest first, without self.
func (r *Recovery) stripHolders(cur *placement.Ring, past []*placement.Ring, oid uint64, copies, i int) []proto.Node {
	var out []proto.Node
	seen := map[proto.NodeID]bool{r.self: true}
	for _, ring := range append([]*placement.Ring{cur}, past...) {
		t := ring.Locate(oid, copies)
		if i < len(t) && !seen[t[i].NodeID] {
			seen[t[i].NodeID] = true
			out = append(out, t[i])
		}
	}
	return out
}

// readStrip reads the whole strip i of oid into buf from the first of
// holders that has it.
func (r *Recovery) readStrip(ctx context.Context, holders []proto.Node, pol erasure.Policy, oid uint64, i int, buf []byte, epoch uint32) error {
	var last error = proto.ResNoObj
	for _, n := range holders {
		if n.NrVnodes == 0 {
			continue
		}
		req := proto.NewRequest(proto.OpReadPeer)
		req.Flags = proto.FlagCmdRecovery
		req.Epoch = epoch
		req.SetObj(proto.ObjArgs{Oid: oid, TgtEpoch: epoch, ECIndex: uint8(i), CopyPolicy: uint8(pol), Copies: uint8(pol.Total())})
		_, got, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
		if err == nil && got != len(buf) {
			err = fmt.Errorf("short read %d of %d", got, len(buf))
		}
		if err == nil {
			return nil
		}
		last = err
	}
	return last
}

// recoverStrip gives this node strip i of oid: copied from a node that
// held it, or rebuilt from d other strips. As recoverOne, it reads from
// peers without the strip's lock (store.Locks.LockAfter) and stores the
// strip holding it, unless a write made the strip here meanwhile.
func (r *Recovery) recoverStrip(ctx context.Context, cur *placement.Ring, past []*placement.Ring, pol erasure.Policy, oid uint64, i int, objSize int64, epoch uint32) error {
	key := proto.StripKey(oid, i)
	size := int(pol.StoredSize(objSize))
	bp := bufpool.Get(size)
	defer bufpool.Put(bp)
	buf := *bp
	var got bool
	err := r.locks.LockAfter(key, func() error {
		got = false
		if r.store.Exists(key) {
			return nil // nothing to read: the strip here wins
		}
		if err := r.stripFrom(ctx, cur, past, pol, oid, i, buf, epoch); err != nil {
			return err
		}
		got = true
		return nil
	})
	if err != nil {
		return err
	}
	defer r.locks.Unlock(key)
	if !got || r.store.Exists(key) {
		return nil
	}
	if err := r.store.Create(ctx, key, int64(size), 0, buf, true); err != nil {
		return err
	}
	r.progress.Lock()
	r.progress.moved += uint64(size)
	r.progress.Unlock()
	return nil
}

// stripFrom fills buf with strip i of oid: read from a node that held it,
// or rebuilt from any d of the other strips (this node's own first).
func (r *Recovery) stripFrom(ctx context.Context, cur *placement.Ring, past []*placement.Ring, pol erasure.Policy, oid uint64, i int, buf []byte, epoch uint32) error {
	copies := pol.Total()
	if err := r.readStrip(ctx, r.stripHolders(cur, past, oid, copies, i), pol, oid, i, buf, epoch); err == nil {
		return nil
	}
	size := len(buf)
	bp := bufpool.Get(copies * size)
	defer bufpool.Put(bp)
	var arr [erasure.MaxStrips][]byte
	shards := arr[:copies]
	have := 0
	for j := 0; j < copies && have < pol.Data(); j++ {
		if j == i {
			continue
		}
		b := (*bp)[j*size : (j+1)*size]
		err := r.localStrip(ctx, oid, j, b)
		if err != nil {
			err = r.readStrip(ctx, r.stripHolders(cur, past, oid, copies, j), pol, oid, j, b, epoch)
		}
		if err != nil {
			continue
		}
		shards[j] = b
		have++
	}
	if have < pol.Data() {
		return fmt.Errorf("strip %d of %016x: no holder, and %d of %d strips to rebuild it: %w", i, oid, have, pol.Data(), proto.ResNoObj)
	}
	c, err := erasure.CodecFor(pol)
	if err != nil {
		return err
	}
	shards[i] = buf[:0] // rebuilt in place
	if err := c.RebuildOne(shards, i); err != nil {
		return fmt.Errorf("rebuild strip %d of %016x: %w", i, oid, err)
	}
	r.log.Info("recovery: rebuilt strip", "oid", fmt.Sprintf("%016x", oid), "strip", i)
	return nil
}

// localStrip reads this node's own strip i of oid into buf, if it has one
// that the current epoch may use (a strip left here from an epoch that
// placed it here; see keepStrip).
func (r *Recovery) localStrip(ctx context.Context, oid uint64, i int, buf []byte) error {
	key := proto.StripKey(oid, i)
	if !r.store.Exists(key) {
		return proto.ResNoObj
	}
	return r.store.ReadAt(ctx, key, buf, 0)
}

// unplaced reports whether key is a strip whose index no node holds in
// ring (fewer zones than strips): cleanup keeps such a strip where it is,
// as redundancy until the zones are back (a write while it is unplaced
// removes it, core/gateway/ec.go, so that it is never older than the
// others).
func unplaced(ring *placement.Ring, key uint64, copies int) bool {
	_, i, strip := proto.SplitKey(key)
	return strip && i >= ring.Copies(copies)
}
