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
//     from any d (a degraded read: counted, DegradedReads, and logged at
//     most once per 10 s with the count of those not logged); a strip
//     that failed its checksums is then rewritten from the rebuilt bytes.
//   - A write encodes the stripes it touches and writes every strip's
//     range on its node in parallel; a write that does not cover whole
//     stripes first reads the stripes' other bytes (read-modify-write).
//     Like Sheepdog, two concurrent unaligned writes into the same 512-byte
//     stripe are not serialised: the object layer's writers (QEMU, NBD
//     clients) write whole sectors.
//   - With fewer zones than d a write fails with SYSTEM_ERROR, as
//     Sheepdog's does; with d to d+p-1 zones it writes the strips that
//     have a node.
//   - The strips of a request live in one pooled buffer (stripSet), so a
//     read or write allocates no buffer of its size.
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
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
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
	_, got, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, buf)
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
	if i >= len(p.targets) {
		return g.fetchPastStrip(ctx, p, oid, i, off, buf, proto.NodeID{}, fmt.Errorf("strip %d of %016x: no node for it: %w", i, oid, proto.ResNoObj))
	}
	n := p.targets[i]
	err := g.readStrip(ctx, p, n, oid, i, off, buf)
	if !errors.Is(err, proto.ResNoObj) {
		return err
	}
	return g.fetchPastStrip(ctx, p, oid, i, off, buf, n.NodeID, err)
}

// fetchPastStrip is fetchStrip's search of the live nodes that held strip
// i in past epochs, skipping tried (the current holder); err is the
// answer when none has it.
func (g *Gateway) fetchPastStrip(ctx context.Context, p plan, oid uint64, i int, off int64, buf []byte, tried proto.NodeID, err error) error {
	seen := map[proto.NodeID]bool{tried: true}
	live := map[proto.NodeID]bool{}
	for _, n := range g.liveNodes() {
		live[n.NodeID] = true
	}
	for _, r := range g.pastRings(p.epoch) {
		t := r.Locate(oid, p.copies)
		if i >= len(t) || seen[t[i].NodeID] || !live[t[i].NodeID] {
			continue
		}
		seen[t[i].NodeID] = true
		if e := g.readStrip(ctx, p, t[i], oid, i, off, buf); e == nil || !errors.Is(e, proto.ResNoObj) {
			return e
		}
	}
	return err
}

// stripSet is the strips of one range of an object: shards[i] is strip
// i's bytes, empty (with room for the strip, so that Reed-Solomon
// rebuilds it in place) where not fetched or failed. Every strip lives in
// one pooled buffer; release returns it and the set.
type stripSet struct {
	shards   [][]byte
	errs     []error
	bad      []int // strips that failed their checksums (EIO)
	buf      *[]byte
	stripLen int
	shardArr [erasure.MaxStrips][]byte
	errArr   [erasure.MaxStrips]error
	badArr   [erasure.MaxStrips]int
}

var stripSets = sync.Pool{New: func() any { return new(stripSet) }}

// newStripSet returns an empty set of total strips of stripLen bytes.
func newStripSet(total, stripLen int) *stripSet {
	s := stripSets.Get().(*stripSet)
	s.stripLen = stripLen
	s.buf = bufpool.Get(total * stripLen)
	s.shards, s.errs, s.bad = s.shardArr[:total], s.errArr[:total], s.badArr[:0]
	for i := range s.shards {
		s.shards[i] = s.slot(i)[:0]
	}
	return s
}

// slot is strip i's room in the buffer.
func (s *stripSet) slot(i int) []byte {
	return (*s.buf)[i*s.stripLen : (i+1)*s.stripLen : (i+1)*s.stripLen]
}

// has reports whether strip i is present.
func (s *stripSet) has(i int) bool { return len(s.shards[i]) > 0 }

// release returns the set and its buffer to their pools; no shard may be
// used after it.
func (s *stripSet) release() {
	bufpool.Put(s.buf)
	s.buf = nil
	clear(s.shardArr[:])
	clear(s.errArr[:])
	stripSets.Put(s)
}

// fetchStrips reads strips [from, to) of span in parallel into set, the
// first on the calling goroutine.
func (g *Gateway) fetchStrips(ctx context.Context, p plan, oid uint64, span erasure.Span, from, to int, set *stripSet) {
	fetch := func(i int) {
		b := set.slot(i)
		if err := g.fetchStrip(ctx, p, oid, i, span.StripOff, b); err != nil {
			set.shards[i], set.errs[i] = b[:0], err
			return
		}
		set.shards[i] = b
	}
	var wg sync.WaitGroup
	for i := from + 1; i < to; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fetch(i)
		}()
	}
	fetch(from)
	wg.Wait()
	for i := from; i < to; i++ {
		if set.errs[i] != nil && (errors.Is(set.errs[i], store.ErrChecksum) || proto.ResultOf(set.errs[i]) == proto.ResEIO) {
			set.bad = append(set.bad, i)
		}
	}
}

// ecReadSpan returns the data strips of span: shards[0:d] filled, from the
// data strips or rebuilt from any d strips. The caller releases the set.
func (g *Gateway) ecReadSpan(ctx context.Context, p plan, oid uint64, span erasure.Span) (*stripSet, error) {
	d, total := p.policy.Data(), p.policy.Total()
	set := newStripSet(total, span.StripLen)
	g.fetchStrips(ctx, p, oid, span, 0, d, set)
	missing := 0
	for i := range d {
		if !set.has(i) {
			missing++
		}
	}
	if missing == 0 {
		return set, nil
	}
	// Degraded: the parity strips stand in for the missing data strips.
	g.fetchStrips(ctx, p, oid, span, d, total, set)
	have := 0
	for i := range total {
		if set.has(i) {
			have++
		}
	}
	if have < d {
		err := g.tooFew(oid, set, have, d)
		set.release()
		return nil, err
	}
	c, err := erasure.CodecFor(p.policy)
	if err == nil {
		err = c.Reconstruct(set.shards, true)
	}
	if err != nil {
		set.release()
		return nil, fmt.Errorf("rebuild %016x: %w: %w", oid, proto.ResEIO, err)
	}
	g.degraded.Add(1)
	g.sampled.Warn("degraded read of erasure-coded object", "oid", fmt.Sprintf("%016x", oid), "missing_data_strips", missing, "bad", set.bad)
	return set, nil
}

// tooFew is the error of a read that found fewer than d strips: NO_OBJ
// when no strip exists anywhere (the object was never written), else the
// first real failure, or EIO when the others were only not found. A strip
// found means the object was written: its missing strips are lost (or set
// aside), and its data must not read as a hole (NO_OBJ makes a volume
// read zeros there).
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
		return fmt.Errorf("read %016x: %d of %d strips needed, no other found: %w", oid, have, d, proto.ResEIO)
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
	defer set.release()
	if len(set.bad) > 0 {
		g.repairStrips(ctx, p, oid, set.bad)
	}
	p.policy.JoinAt(set.shards[:p.policy.Data()], int(off-span.Off()), buf)
	return nil
}

// DegradedReads is the number of reads of erasure-coded objects this
// gateway served by rebuilding data strips from parity (some data strip
// missing or bad) since it started.
func (g *Gateway) DegradedReads() uint64 { return g.degraded.Load() }

// repairStrips rewrites the strips that failed their checksums, whole,
// from the others.
func (g *Gateway) repairStrips(ctx context.Context, p plan, oid uint64, bad []int) {
	all, err := g.rebuildAll(ctx, p, oid)
	if err != nil {
		g.log.Warn("cannot rebuild bad strips", "oid", fmt.Sprintf("%016x", oid), "strips", bad, "err", err)
		return
	}
	defer all.release()
	for _, i := range bad {
		if i >= len(p.targets) {
			continue
		}
		if err := g.putStrip(ctx, p, p.targets[i], oid, i, all.shards[i], true); err != nil {
			g.log.Warn("cannot repair bad strip", "oid", fmt.Sprintf("%016x", oid), "strip", i, "err", err)
			continue
		}
		g.log.Warn("repaired bad strip", "oid", fmt.Sprintf("%016x", oid), "strip", i, "node", p.targets[i].NodeID.String())
	}
}

// rebuildAll returns all d+p whole strips of oid, read or rebuilt. The
// caller releases the set.
func (g *Gateway) rebuildAll(ctx context.Context, p plan, oid uint64) (*stripSet, error) {
	span := p.policy.SpanOf(0, int(p.size))
	set, err := g.ecReadSpan(ctx, p, oid, span)
	if err != nil {
		return nil, err
	}
	c, err := erasure.CodecFor(p.policy)
	if err != nil {
		set.release()
		return nil, err
	}
	for i := p.policy.Data(); i < len(set.shards); i++ {
		set.shards[i] = set.slot(i)
	}
	if err := c.Encode(set.shards); err != nil {
		set.release()
		return nil, err
	}
	return set, nil
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
	_, _, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, data, nil)
	return err
}

// ecWrite writes data at off of the erasure-coded object oid: with create,
// creating strips that do not exist (CREATE_AND_WRITE); cowFrom != 0
// starts the object as a copy of cowFrom.
func (g *Gateway) ecWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16, create bool) error {
	return g.writeRange(ctx, oid, off, int64(len(data)), flags, func(p plan, synced bool) error {
		d := p.policy.Data()
		if len(p.targets) < d {
			return fmt.Errorf("%016x: %d zones for %d data strips: %w", oid, len(p.targets), d, proto.ResSystemError)
		}
		if len(data) == 0 && cowFrom == 0 {
			if !create {
				return nil
			}
			// A create without data (collie vdi create -P
			// preallocates so): every strip whole and zero, as a
			// replicated copy is. There is nothing to encode.
			var arr [erasure.MaxStrips][]byte
			return g.putStrips(ctx, p, oid, p.policy.SpanOf(0, 0), arr[:p.policy.Total()], synced, true)
		}
		off, data := off, data
		if cowFrom != 0 {
			fb := bufpool.Get(int(p.size))
			defer bufpool.Put(fb)
			full := *fb
			if err := g.ReadObject(ctx, cowFrom, 0, full); err != nil {
				return fmt.Errorf("copy-on-write from %016x: %w", cowFrom, err)
			}
			copy(full[off:], data)
			off, data = 0, full
		}
		span := p.policy.SpanOf(off, len(data))
		stripes := data
		if !erasure.Aligned(off, len(data)) {
			sb := bufpool.Get(span.Bytes())
			defer bufpool.Put(sb)
			stripes = *sb
			if err := g.readEdges(ctx, p, oid, off, len(data), span, stripes); err != nil {
				return err
			}
			copy(stripes[off-span.Off():], data)
		}
		c, err := erasure.CodecFor(p.policy)
		if err != nil {
			return err
		}
		set := newStripSet(p.policy.Total(), span.StripLen)
		defer set.release()
		strips := set.shards
		for i := range strips {
			strips[i] = set.slot(i)
		}
		if err := c.EncodeStripes(stripes, strips); err != nil {
			return err
		}
		return g.putStrips(ctx, p, oid, span, strips, synced, create)
	})
}

// putStrips writes strips (each strip's range of span) on the nodes of
// p, in parallel. Strips p has no node for are dropped everywhere; a
// node without its strip (not recovered yet, when !create) gets the
// whole strip rebuilt first.
func (g *Gateway) putStrips(ctx context.Context, p plan, oid uint64, span erasure.Span, strips [][]byte, synced, create bool) error {
	targets := p.targets[:min(len(p.targets), len(strips))]
	var missing []int
	var mu sync.Mutex
	err := forEachIndex(len(targets), func(i int) error {
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
	defer all.release()
	for _, i := range missing {
		if err := g.putStrip(ctx, p, targets[i], oid, i, all.shards[i], false); err != nil {
			return err
		}
		if err := g.writeStrip(ctx, p, targets[i], oid, i, span.StripOff, strips[i], synced, false); err != nil {
			return err
		}
	}
	return nil
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
				_, _, err = g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, nil)
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
// none). The rest of stripes is left as it was.
func (g *Gateway) readEdges(ctx context.Context, p plan, oid uint64, off int64, n int, span erasure.Span, stripes []byte) error {
	read := func(stripe int64) error {
		at := (stripe - span.Start) * erasure.StripeSize
		b := stripes[at : at+erasure.StripeSize]
		err := g.ecRead(ctx, p, oid, stripe*erasure.StripeSize, b)
		if errors.Is(err, proto.ResNoObj) {
			clear(b) // a new object: zeros
			return nil
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
		if create {
			return g.localWrite(ctx, key, func() error {
				return g.store.CreateOrWrite(ctx, key, p.policy.StoredSize(p.size), off, data, synced)
			})
		}
		return g.localChange(ctx, key, func() error { return g.store.WriteAt(ctx, key, data, off, synced) })
	}
	op := proto.OpWritePeer
	if create {
		op = proto.OpCreateAndWritePeer
	}
	r := stripReq(op, p, oid, i, off)
	if !synced {
		r.Flags |= proto.FlagCmdCache
	}
	_, _, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, data, nil)
	return err
}

// ecRemove removes every strip of oid from its node.
func (g *Gateway) ecRemove(ctx context.Context, oid uint64) error {
	return g.withWriteRetry(ctx, func() error {
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
				_, _, err = g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, nil)
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

// zeroStripe is the zeros ecPunch writes into the edge stripes it covers
// partly (less than a stripe each; ecWrite only reads them).
var zeroStripe [erasure.StripeSize]byte

// ecPunch makes [off, off+n) of oid read as zeros: whole stripes are
// punched in every strip (zeros code to zero parity), the partly covered
// edge stripes are written with zeros.
func (g *Gateway) ecPunch(ctx context.Context, oid uint64, off, n int64, flags uint16) error {
	head := min((off+erasure.StripeSize-1)/erasure.StripeSize*erasure.StripeSize, off+n)
	tail := max((off+n)/erasure.StripeSize*erasure.StripeSize, head)
	if head > off {
		if err := g.ecWrite(ctx, oid, 0, off, zeroStripe[:head-off], flags, false); err != nil {
			return err
		}
	}
	if tail > head {
		err := g.writeRange(ctx, oid, off, n, flags, func(p plan, synced bool) error {
			span := p.policy.SpanOf(head, int(tail-head))
			return forEachIndex(min(len(p.targets), p.policy.Total()), func(i int) error {
				t := p.targets[i]
				key := proto.StripKey(oid, i)
				if g.isSelf(t) {
					return g.localChange(ctx, key, func() error {
						return g.store.Punch(ctx, key, span.StripOff, int64(span.StripLen), synced)
					})
				}
				r := stripReq(proto.OpPunchPeer, p, oid, i, span.StripOff)
				if !synced {
					r.Flags |= proto.FlagCmdCache
				}
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], uint64(span.StripLen))
				_, _, err := g.peers.Call(ctx, g.peers.Addr(t.NodeID), &r, b[:], nil)
				return err
			})
		})
		if err != nil {
			return err
		}
	}
	if off+n > tail {
		return g.ecWrite(ctx, oid, 0, tail, zeroStripe[:off+n-tail], flags, false)
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
