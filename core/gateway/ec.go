package gateway

// Erasure-coded objects (docs/protocol.md §7). A data or vmstate object of a
// VDI whose copy_policy is d:p is stored as d+p strips: strip i (the i-th
// 512/d bytes of every 512-byte stripe, or a parity strip for i >= d) is
// the file <oid>_<i> on the i-th node of the object's placement, of
// object_size/d bytes (core/erasure has the arithmetic).
//
//   - A read fetches the d data strips of the stripes it touches in
//     parallel and interleaves them. When some are missing, unreadable or
//     fail their checksums it fetches parity strips and rebuilds the data
//     from any d (a degraded read, logged); a strip that failed
//     its checksums is then rewritten from the rebuilt bytes. (Counted in
//     the log only: node stat's reply is Sheepdog's fixed structure.)
//   - A write encodes the stripes it touches and writes every strip's
//     range on its node in parallel; a write that does not cover whole
//     stripes first reads the stripes' other bytes (read-modify-write).
//     Like Sheepdog, two concurrent unaligned writes into the same 512-byte
//     stripe are not serialised: the object layer's writers (QEMU, NBD
//     clients) write whole sectors.
//   - With fewer zones than d a write fails with SYSTEM_ERROR, as
//     Sheepdog's does; with d to d+p-1 zones it writes the strips that
//     have a node.
//   - A strip whose node lacks it (recovery has not rebuilt it yet) is
//     looked for on the node that held strip i in past epochs; a write to
//     a node without its strip rebuilds the whole strip there first.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// ecPolicy is the erasure code oid is stored under, 0 for replicas.
func (g *Gateway) ecPolicy(ctx context.Context, oid uint64) erasure.Policy {
	if !proto.IsErasureOid(oid) {
		return 0
	}
	return g.plan(ctx, oid).policy
}

// stripReq is a peer request for strip i of oid at off in the strip file.
func stripReq(op proto.Opcode, p plan, oid uint64, i int, off int64) proto.Request {
	r := proto.NewRequest(op)
	r.Epoch = p.epoch
	r.SetObj(proto.ObjArgs{Oid: oid, Offset: uint32(off), ECIndex: uint8(i), CopyPolicy: uint8(p.policy), Copies: uint8(p.copies)})
	return r
}

// readStrip reads buf from strip i of oid at off, from node n.
func (g *Gateway) readStrip(ctx context.Context, p plan, n proto.Node, oid uint64, i int, off int64, buf []byte) error {
	if g.isSelf(n) {
		if !g.trusted() || !g.settled(ctx) {
			return fmt.Errorf("strip %d of %016x: local copies not settled: %w", i, oid, proto.ResNoObj)
		}
		return g.store.ReadAt(ctx, proto.StripKey(oid, i), buf, off)
	}
	r := stripReq(proto.OpReadPeer, p, oid, i, off)
	_, got, err := g.peers.Call(ctx, n.NodeID.String(), &r, nil, buf)
	if err != nil {
		return err
	}
	if got != len(buf) {
		return fmt.Errorf("%s: short read of strip %d of %016x: %w", n.NodeID, i, oid, proto.ResEIO)
	}
	return nil
}

// fetchStrip reads strip i's range from the node the current epoch places
// it on, or, when that node lacks it, from the nodes that held strip i in
// past epochs (newest first).
func (g *Gateway) fetchStrip(ctx context.Context, p plan, oid uint64, i int, off int64, buf []byte) error {
	err := fmt.Errorf("strip %d of %016x: no node for it: %w", i, oid, proto.ResNoObj)
	tried := map[proto.NodeID]bool{}
	if i < len(p.targets) {
		n := p.targets[i]
		tried[n.NodeID] = true
		if err = g.readStrip(ctx, p, n, oid, i, off, buf); !errors.Is(err, proto.ResNoObj) {
			return err
		}
	}
	live := map[proto.NodeID]bool{}
	for _, n := range g.liveNodes() {
		live[n.NodeID] = true
	}
	for _, r := range g.pastRings(p.epoch) {
		t := r.Locate(oid, p.copies)
		if i >= len(t) || tried[t[i].NodeID] || !live[t[i].NodeID] {
			continue
		}
		tried[t[i].NodeID] = true
		if e := g.readStrip(ctx, p, t[i], oid, i, off, buf); e == nil || !errors.Is(e, proto.ResNoObj) {
			return e
		}
	}
	return err
}

// stripSet is the strips of one range of an object, as fetched.
type stripSet struct {
	shards [][]byte // d+p; nil where not fetched or failed
	errs   []error
	bad    []int // strips that failed their checksums (EIO)
}

// fetchStrips reads strips idx of span in parallel into set.
func (g *Gateway) fetchStrips(ctx context.Context, p plan, oid uint64, span erasure.Span, idx []int, set *stripSet) {
	var wg sync.WaitGroup
	for _, i := range idx {
		set.shards[i] = make([]byte, span.StripLen)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.fetchStrip(ctx, p, oid, i, span.StripOff, set.shards[i]); err != nil {
				set.shards[i], set.errs[i] = nil, err
			}
		}()
	}
	wg.Wait()
	for _, i := range idx {
		if set.errs[i] != nil && (errors.Is(set.errs[i], store.ErrChecksum) || proto.ResultOf(set.errs[i]) == proto.ResEIO) {
			set.bad = append(set.bad, i)
		}
	}
}

// ecReadSpan returns the data strips of span: shards[0:d] filled, from the
// data strips or rebuilt from any d strips.
func (g *Gateway) ecReadSpan(ctx context.Context, p plan, oid uint64, span erasure.Span) (*stripSet, error) {
	d, total := p.policy.Data(), p.policy.Total()
	set := &stripSet{shards: make([][]byte, total), errs: make([]error, total)}
	idx := make([]int, d)
	for i := range idx {
		idx[i] = i
	}
	g.fetchStrips(ctx, p, oid, span, idx, set)
	missing := 0
	for i := range d {
		if set.shards[i] == nil {
			missing++
		}
	}
	if missing == 0 {
		return set, nil
	}
	// Degraded: the parity strips stand in for the missing data strips.
	var par []int
	for i := d; i < total; i++ {
		par = append(par, i)
	}
	g.fetchStrips(ctx, p, oid, span, par, set)
	have := 0
	for _, s := range set.shards {
		if s != nil {
			have++
		}
	}
	if have < d {
		return nil, g.tooFew(oid, set, have, d)
	}
	c, err := erasure.CodecFor(p.policy)
	if err != nil {
		return nil, err
	}
	if err := c.Reconstruct(set.shards, true); err != nil {
		return nil, fmt.Errorf("rebuild %016x: %w: %w", oid, proto.ResEIO, err)
	}
	g.log.Warn("degraded read of erasure-coded object", "oid", fmt.Sprintf("%016x", oid), "missing_data_strips", missing, "bad", set.bad)
	return set, nil
}

// tooFew is the error of a read that found fewer than d strips: NO_OBJ
// when no strip exists anywhere (the object was never written), else the
// first real failure.
func (g *Gateway) tooFew(oid uint64, set *stripSet, have, d int) error {
	var first error
	for _, e := range set.errs {
		if e != nil && !errors.Is(e, proto.ResNoObj) {
			first = e
			break
		}
	}
	if have == 0 && first == nil {
		return fmt.Errorf("read %016x: no strip found: %w", oid, proto.ResNoObj)
	}
	if first == nil {
		first = proto.ResNoObj
	}
	return fmt.Errorf("read %016x: %d of %d strips needed: %w", oid, have, d, first)
}

// ecRead fills buf from the erasure-coded object oid at off.
func (g *Gateway) ecRead(ctx context.Context, p plan, oid uint64, off int64, buf []byte) error {
	span := p.policy.SpanOf(off, len(buf))
	if span.StripLen == 0 {
		return nil
	}
	set, err := g.ecReadSpan(ctx, p, oid, span)
	if err != nil {
		return err
	}
	if len(set.bad) > 0 {
		g.repairStrips(ctx, p, oid, set.bad)
	}
	if span.Off() == off && span.Bytes() == len(buf) {
		p.policy.Join(set.shards[:p.policy.Data()], buf)
		return nil
	}
	stripes := make([]byte, span.Bytes())
	p.policy.Join(set.shards[:p.policy.Data()], stripes)
	copy(buf, stripes[off-span.Off():])
	return nil
}

// repairStrips rewrites the strips that failed their checksums, whole,
// from the others.
func (g *Gateway) repairStrips(ctx context.Context, p plan, oid uint64, bad []int) {
	strips, err := g.rebuildAll(ctx, p, oid)
	if err != nil {
		g.log.Warn("cannot rebuild bad strips", "oid", fmt.Sprintf("%016x", oid), "strips", bad, "err", err)
		return
	}
	for _, i := range bad {
		if i >= len(p.targets) {
			continue
		}
		if err := g.putStrip(ctx, p, p.targets[i], oid, i, strips[i], true); err != nil {
			g.log.Warn("cannot repair bad strip", "oid", fmt.Sprintf("%016x", oid), "strip", i, "err", err)
			continue
		}
		g.log.Warn("repaired bad strip", "oid", fmt.Sprintf("%016x", oid), "strip", i, "node", p.targets[i].NodeID.String())
	}
}

// rebuildAll returns all d+p whole strips of oid, read or rebuilt.
func (g *Gateway) rebuildAll(ctx context.Context, p plan, oid uint64) ([][]byte, error) {
	span := p.policy.SpanOf(0, int(p.size))
	set, err := g.ecReadSpan(ctx, p, oid, span)
	if err != nil {
		return nil, err
	}
	c, err := erasure.CodecFor(p.policy)
	if err != nil {
		return nil, err
	}
	for i := p.policy.Data(); i < len(set.shards); i++ {
		if set.shards[i] == nil {
			set.shards[i] = make([]byte, span.StripLen)
		}
	}
	if err := c.Encode(set.shards); err != nil {
		return nil, err
	}
	return set.shards, nil
}

// putStrip creates strip i of oid on n from data, the whole strip: with
// replace an existing strip is replaced, else it is kept (a write or a
// recovery made it meanwhile, see fill).
func (g *Gateway) putStrip(ctx context.Context, p plan, n proto.Node, oid uint64, i int, data []byte, replace bool) error {
	key := proto.StripKey(oid, i)
	size := p.policy.StoredSize(p.size)
	if g.isSelf(n) {
		return g.localWrite(ctx, key, func() error {
			if !replace && g.store.Exists(key) {
				return nil
			}
			return g.store.Create(ctx, key, size, 0, data, true)
		})
	}
	r := stripReq(proto.OpCreateAndWritePeer, p, oid, i, 0)
	if !replace {
		r.Flags |= proto.FlagCmdExcl
	}
	_, _, err := g.peers.Call(ctx, n.NodeID.String(), &r, data, nil)
	return err
}

// ecWrite writes data at off of the erasure-coded object oid: with create,
// creating strips that do not exist (CREATE_AND_WRITE); cowFrom != 0
// starts the object as a copy of cowFrom.
func (g *Gateway) ecWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16, create bool) error {
	synced := !writeBack(flags)
	if !synced {
		defer g.cached.Add(1)
	}
	return withRetry(ctx, func() error {
		p := g.plan(ctx, oid)
		if err := g.writable(oid, p); err != nil {
			return err
		}
		if err := checkRange(oid, p.size, off, len(data)); err != nil {
			return err
		}
		d := p.policy.Data()
		if len(p.targets) < d {
			return fmt.Errorf("%016x: %d zones for %d data strips: %w", oid, len(p.targets), d, proto.ResSystemError)
		}
		off, data := off, data
		if cowFrom != 0 {
			full := make([]byte, p.size)
			if err := g.ReadObject(ctx, cowFrom, 0, full); err != nil {
				return fmt.Errorf("copy-on-write from %016x: %w", cowFrom, err)
			}
			copy(full[off:], data)
			off, data = 0, full
		}
		span := p.policy.SpanOf(off, len(data))
		stripes := data
		if !erasure.Aligned(off, len(data)) {
			stripes = make([]byte, span.Bytes())
			if err := g.readEdges(ctx, p, oid, off, len(data), span, stripes); err != nil {
				return err
			}
			copy(stripes[off-span.Off():], data)
		}
		c, err := erasure.CodecFor(p.policy)
		if err != nil {
			return err
		}
		strips := make([][]byte, p.policy.Total())
		for i := range strips {
			strips[i] = make([]byte, span.StripLen)
		}
		if err := c.EncodeStripes(stripes, strips); err != nil {
			return err
		}
		targets := p.targets[:min(len(p.targets), len(strips))]
		var missing []int
		var mu sync.Mutex
		err = forEachIndex(len(targets), func(i int) error {
			err := g.writeStrip(ctx, p, targets[i], oid, i, span.StripOff, strips[i], synced, create)
			if !create && errors.Is(err, proto.ResNoObj) {
				mu.Lock()
				missing = append(missing, i)
				mu.Unlock()
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
		if len(targets) < len(strips) {
			// Strips that have no node now would be older than the rest
			// after this write: none may be left anywhere.
			if err := g.dropUnplaced(ctx, p, oid, len(targets)); err != nil {
				return err
			}
		}
		if len(missing) == 0 {
			return nil
		}
		// Nodes without their strip (not recovered yet): rebuild it there
		// whole, then write this range over it.
		all, err := g.rebuildAll(ctx, p, oid)
		if err != nil {
			return fmt.Errorf("rebuild missing strips of %016x: %w", oid, err)
		}
		for _, i := range missing {
			if err := g.putStrip(ctx, p, targets[i], oid, i, all[i], false); err != nil {
				return err
			}
			if err := g.writeStrip(ctx, p, targets[i], oid, i, span.StripOff, strips[i], synced, false); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropUnplaced removes strips from..d+p-1 of oid, those no node holds in
// this epoch (fewer zones than strips), from every live node.
func (g *Gateway) dropUnplaced(ctx context.Context, p plan, oid uint64, from int) error {
	nodes := g.liveNodes()
	return forEach(nodes, func(n proto.Node) error {
		for i := from; i < p.policy.Total(); i++ {
			var err error
			if g.isSelf(n) {
				key := proto.StripKey(oid, i)
				err = g.localWrite(ctx, key, func() error { return g.store.Remove(ctx, key) })
			} else {
				r := stripReq(proto.OpRemovePeer, p, oid, i, 0)
				_, _, err = g.peers.Call(ctx, n.NodeID.String(), &r, nil, nil)
			}
			if err != nil && !errors.Is(err, proto.ResNoObj) {
				return fmt.Errorf("drop unplaced strip %d of %016x on %s: %w", i, oid, n.NodeID, err)
			}
		}
		return nil
	})
}

// readEdges fills the head and tail stripes of span that [off, off+n)
// covers only partly with the object's current bytes (zeros where it has
// none).
func (g *Gateway) readEdges(ctx context.Context, p plan, oid uint64, off int64, n int, span erasure.Span, stripes []byte) error {
	read := func(stripe int64) error {
		at := (stripe - span.Start) * erasure.StripeSize
		err := g.ecRead(ctx, p, oid, stripe*erasure.StripeSize, stripes[at:at+erasure.StripeSize])
		if errors.Is(err, proto.ResNoObj) {
			return nil // a new object: zeros
		}
		return err
	}
	if off%erasure.StripeSize != 0 {
		if err := read(span.Start); err != nil {
			return err
		}
	}
	if (off+int64(n))%erasure.StripeSize != 0 && (span.End-1 != span.Start || off%erasure.StripeSize == 0) {
		if err := read(span.End - 1); err != nil {
			return err
		}
	}
	return nil
}

// writeStrip writes data at off of strip i of oid on n.
func (g *Gateway) writeStrip(ctx context.Context, p plan, n proto.Node, oid uint64, i int, off int64, data []byte, synced, create bool) error {
	key := proto.StripKey(oid, i)
	if g.isSelf(n) {
		return g.localWrite(ctx, key, func() error {
			if create {
				return g.store.CreateOrWrite(ctx, key, p.policy.StoredSize(p.size), off, data, synced)
			}
			return g.store.WriteAt(ctx, key, data, off, synced)
		})
	}
	op := proto.OpWritePeer
	if create {
		op = proto.OpCreateAndWritePeer
	}
	r := stripReq(op, p, oid, i, off)
	if !synced {
		r.Flags |= proto.FlagCmdCache
	}
	_, _, err := g.peers.Call(ctx, n.NodeID.String(), &r, data, nil)
	return err
}

// ecRemove removes every strip of oid from its node.
func (g *Gateway) ecRemove(ctx context.Context, oid uint64) error {
	return withRetry(ctx, func() error {
		p := g.plan(ctx, oid)
		var found atomic.Bool
		err := forEachIndex(min(len(p.targets), p.policy.Total()), func(i int) error {
			n := p.targets[i]
			var err error
			if g.isSelf(n) {
				key := proto.StripKey(oid, i)
				err = g.localWrite(ctx, key, func() error { return g.store.Remove(ctx, key) })
			} else {
				r := stripReq(proto.OpRemovePeer, p, oid, i, 0)
				_, _, err = g.peers.Call(ctx, n.NodeID.String(), &r, nil, nil)
			}
			if errors.Is(err, proto.ResNoObj) {
				return nil
			}
			if err == nil {
				found.Store(true)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !found.Load() {
			return fmt.Errorf("remove %016x: %w", oid, proto.ResNoObj)
		}
		return nil
	})
}

// ecPunch makes [off, off+n) of oid read as zeros: whole stripes are
// punched in every strip (zeros code to zero parity), the partly covered
// edge stripes are written with zeros.
func (g *Gateway) ecPunch(ctx context.Context, oid uint64, off, n int64, flags uint16) error {
	head := min((off+erasure.StripeSize-1)/erasure.StripeSize*erasure.StripeSize, off+n)
	tail := max((off+n)/erasure.StripeSize*erasure.StripeSize, head)
	if head > off {
		if err := g.ecWrite(ctx, oid, 0, off, make([]byte, head-off), flags, false); err != nil {
			return err
		}
	}
	if tail > head {
		synced := !writeBack(flags)
		if !synced {
			defer g.cached.Add(1)
		}
		err := withRetry(ctx, func() error {
			p := g.plan(ctx, oid)
			if err := g.writable(oid, p); err != nil {
				return err
			}
			if err := checkRange(oid, p.size, off, int(n)); err != nil {
				return err
			}
			span := p.policy.SpanOf(head, int(tail-head))
			return forEachIndex(min(len(p.targets), p.policy.Total()), func(i int) error {
				t := p.targets[i]
				key := proto.StripKey(oid, i)
				if g.isSelf(t) {
					return g.localWrite(ctx, key, func() error {
						return g.store.Punch(ctx, key, span.StripOff, int64(span.StripLen), synced)
					})
				}
				r := stripReq(proto.OpPunchPeer, p, oid, i, span.StripOff)
				if !synced {
					r.Flags |= proto.FlagCmdCache
				}
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], uint64(span.StripLen))
				_, _, err := g.peers.Call(ctx, t.NodeID.String(), &r, b[:], nil)
				return err
			})
		})
		if err != nil {
			return err
		}
	}
	if off+n > tail {
		return g.ecWrite(ctx, oid, 0, tail, make([]byte, off+n-tail), flags, false)
	}
	return nil
}

// forEachIndex runs f(0..n-1) in parallel and returns the first error,
// preferring a retryable one (as forEach).
func forEachIndex(n int, f func(i int) error) error {
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- f(i) }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && (first == nil || retryable(err)) {
			first = err
		}
	}
	return first
}
