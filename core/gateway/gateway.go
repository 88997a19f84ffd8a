// Package gateway is the replicated object layer: whichever sheep a client
// talks to reads and writes the object's copies on its behalf
// (docs/protocol.md §5.5). It implements the object interface core/volume and
// core/vdi are written against, in-process.
//
// Writes, creates and removes go to every copy in parallel and succeed only
// when all copies did. A write is on stable storage on every copy when it
// returns, unless it carries proto.FlagCmdCache (write-back): then it is
// stable after the next Flush (see Flush for who may set the flag).
//
// Reads are served locally when this node holds a copy, else from the
// other copies in placement order, failing over. A copy that fails the
// store's checksums is never served: the read fails over, and the bad copy
// is repaired from the good one (repair.go).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
	"github.com/sheepdog-go/sheepdog/store"
)

// LocalStore is this node's own copies: a store.Store, or an md.Store
// over several disks (store/md).
type LocalStore interface {
	Exists(oid uint64) bool
	ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error
	WriteAt(ctx context.Context, oid uint64, data []byte, off int64, sync bool) error
	Create(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	CreateOrWrite(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	Punch(ctx context.Context, oid uint64, off, n int64, sync bool) error
	Remove(ctx context.Context, oid uint64) error
	Flush(ctx context.Context) error
	Repair(ctx context.Context, oid uint64, good []byte) (int, error)
}

// TryReader is a LocalStore that can also read without waiting
// (store.Store.TryReadAt): true when buf holds the bytes, false when it
// would have had to wait.
type TryReader interface {
	TryReadAt(oid uint64, buf []byte, off int64) bool
}

// Gateway reads and writes objects for any VDI.
type Gateway struct {
	self    proto.NodeID
	store   LocalStore
	try     TryReader // store, when it is one
	cluster cluster.Driver
	peers   *Peers
	trust   atomic.Pointer[func() bool]
	settle  atomic.Pointer[func(context.Context) bool]
	locks   *store.Locks
	log     *slog.Logger

	mu        sync.Mutex
	ring      *placement.Ring
	ringEpoch uint32
	past      map[uint32]*placement.Ring // rings of past epochs, by epoch
	pastCtime uint64                     // the format they belong to

	// cached counts the write-back writes acknowledged so far; flushed
	// is the count a successful Flush has seen at its start. Equal, there
	// is nothing to flush.
	cached  atomic.Uint64
	flushed atomic.Uint64

	degraded atomic.Uint64     // degraded reads of erasure-coded objects (ec.go)
	sampled  *netlimit.Sampler // log lines every read may cause
}

// New returns a gateway for the node self over its local store.
// Writes to the local copy hold locks' stripe for the object.
func New(self proto.NodeID, st LocalStore, cl cluster.Driver, peers *Peers, locks *store.Locks, log *slog.Logger) *Gateway {
	g := &Gateway{self: self, store: st, cluster: cl, peers: peers, locks: locks, log: log, sampled: netlimit.NewSampler(log, 10*time.Second)}
	g.try, _ = st.(TryReader)
	return g
}

// SetTrust installs the check that this node's copies may be served (see
// recovery.Recovery.Trusted); until set, they always may.
func (g *Gateway) SetTrust(f func() bool) { g.trust.Store(&f) }

func (g *Gateway) trusted() bool {
	f := g.trust.Load()
	return f == nil || (*f)()
}

// SetSettle installs the wait for this node's copies to settle after an
// epoch change (see recovery.Recovery.Settle); until set, there is none.
func (g *Gateway) SetSettle(f func(context.Context) bool) { g.settle.Store(&f) }

// settled waits for the local copies to settle; false: leave them alone.
func (g *Gateway) settled(ctx context.Context) bool {
	f := g.settle.Load()
	return f == nil || (*f)(ctx)
}

// Peers is the gateway's pool of peer connections.
func (g *Gateway) Peers() *Peers { return g.peers }

// localWrite runs f, a change of the local copy of oid, under its lock,
// once the local copies are settled for the epoch (a retryable
// NEW_NODE_VER when they do not settle).
func (g *Gateway) localWrite(ctx context.Context, oid uint64, f func() error) error {
	if !g.settled(ctx) {
		return fmt.Errorf("%016x: local copies not settled for the epoch yet: %w", oid, proto.ResNewNodeVer)
	}
	g.locks.Lock(oid)
	defer g.locks.Unlock(oid)
	return f()
}

// localChange is localWrite for a write or punch of part of oid, which
// runs alongside others of the same object (store.Locks.RLock).
func (g *Gateway) localChange(ctx context.Context, oid uint64, f func() error) error {
	if !g.settled(ctx) {
		return fmt.Errorf("%016x: local copies not settled for the epoch yet: %w", oid, proto.ResNewNodeVer)
	}
	g.locks.RLock(oid)
	defer g.locks.RUnlock(oid)
	return f()
}

// Close drops the peer connections.
func (g *Gateway) Close() { g.peers.Close() }

// plan is where an object's copies live in one epoch.
type plan struct {
	epoch    uint32
	targets  []proto.Node // shared with the ring's table (Ring.Targets): read-only
	copies   int          // wanted, as the VDI says
	size     int64
	readonly bool
	strict   bool           // fewer zones than copies and the cluster is strict
	policy   erasure.Policy // nonzero: oid is stored as strips (ec.go)
}

func (g *Gateway) plan(ctx context.Context, oid uint64) plan {
	v := g.planState(oid)
	if !v.known {
		// A VDI created through another node moments ago: learn its
		// copies and block size before placing its objects.
		g.cluster.Sync(ctx)
		v = g.planState(oid)
	}
	g.mu.Lock()
	if g.ring == nil || g.ringEpoch != v.epoch {
		g.ring, g.ringEpoch = placement.New(v.nodes), v.epoch
	}
	r := g.ring
	g.mu.Unlock()
	p := plan{epoch: v.epoch, copies: v.copies, readonly: v.readonly, policy: v.policy}
	p.size = proto.ObjectSize(oid, v.shift)
	p.targets = r.Targets(oid, v.copies) // shared: read-only
	p.strict = v.strict && r.Zones() < v.copies
	return p
}

// planInputs is what the cluster state says about placing an object.
type planInputs struct {
	known    bool // its VDI is in the state (or the cluster is not formatted)
	shift    uint8
	copies   int
	nodes    []proto.Node // the current epoch's (state-owned: not modified)
	epoch    uint32
	strict   bool
	readonly bool
	policy   erasure.Policy
}

// planState reads what placing oid needs from the cluster state, with
// ReadState: this runs on every request, and View would allocate.
func (g *Gateway) planState(oid uint64) planInputs {
	vid := proto.OidToVid(oid)
	s := g.cluster.ReadState()
	defer g.cluster.ReleaseState()
	st := s.VdiState(vid)
	v := planInputs{known: st != nil || !s.Formatted(), shift: s.BlockShift(vid), copies: int(s.Copies(vid)),
		epoch: s.Epoch(), nodes: s.Nodes(), strict: s.Flags&proto.ClusterFlagStrict != 0}
	if st != nil {
		// vdi_state.snapshot makes a snapshot's data (and vmstate)
		// objects read-only; its inode stays writable (dog writes the
		// tag after the snapshot exists).
		v.readonly = st.Snapshot && !proto.IsVdiObj(oid) && !proto.IsAttrObj(oid)
		if proto.IsErasureOid(oid) {
			v.policy = erasure.Policy(st.CopyPolicy)
		}
	}
	return v
}

func (g *Gateway) isTarget(p plan) bool {
	for _, n := range p.targets {
		if g.isSelf(n) {
			return true
		}
	}
	return false
}

func (g *Gateway) isSelf(n proto.Node) bool { return n.Same(g.self) }

func checkRange(oid uint64, size, off int64, n int) error {
	if off < 0 || off+int64(n) > size {
		return fmt.Errorf("object %016x: range [%d,+%d) outside %d bytes: %w", oid, off, n, size, proto.ResInvalidParms)
	}
	return nil
}

// retryable reports errors after which the request is sent again once the
// epoch settles: epoch mismatches and a peer that went away.
func retryable(err error) bool {
	switch proto.ResultOf(err) {
	case proto.ResOldNodeVer, proto.ResNewNodeVer, proto.ResNetworkError, proto.ResWaitForJoin, proto.ResKilled, proto.ResShutdown:
		return true
	}
	return errors.Is(err, client.ErrClosed) || isNetErr(err)
}

// withRetry runs f until it succeeds, fails for good or 30 s pass.
func withRetry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		err := f()
		if err == nil || !retryable(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// withWriteRetry is withRetry for a change of the copies. A node that
// lost its quorum after the change was admitted (its peers died moments
// before, or it was cut off) refuses it with HALT between attempts, as
// admission would have (cluster.AwaitQuorum: after waiting for a quorum
// to come back), instead of retrying toward unreachable copies for 30 s.
// What the first attempt changed stays changed: a failed write leaves
// its range holding the old or the new data.
func (g *Gateway) withWriteRetry(ctx context.Context, f func() error) error {
	return withRetry(ctx, func() error {
		err := f()
		if err != nil && retryable(err) {
			if qerr := cluster.AwaitQuorum(ctx, g.cluster); qerr != nil {
				return fmt.Errorf("%w (after: %v)", qerr, err)
			}
		}
		return err
	})
}

// ReadObject fills buf from oid at off.
func (g *Gateway) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	return withRetry(ctx, func() error {
		p := g.plan(ctx, oid)
		if err := checkRange(oid, p.size, off, len(buf)); err != nil {
			return err
		}
		if p.policy.Erasure() {
			return g.ecRead(ctx, p, oid, off, buf)
		}
		return g.read(ctx, p, oid, off, buf)
	})
}

// doneCtx has ended: a wait given it returns at once, having only
// checked whether there is anything to wait for.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// TryReadObject is ReadObject for a caller that must not wait (the NBD
// reader serving a read before it reads the next request): true when buf
// holds oid's bytes at off, read from this node's own copy without
// waiting for the disk, a lock, a peer or the cluster. False when that
// cannot be done now (no copy placed here, copies not settled for the
// epoch, bytes not in the page cache, an erasure-coded object ...); the
// caller then uses ReadObject, which may wait.
func (g *Gateway) TryReadObject(oid uint64, off int64, buf []byte) bool {
	if g.try == nil {
		return false
	}
	p := g.plan(doneCtx, oid)
	if off < 0 || off+int64(len(buf)) > p.size || p.policy.Erasure() || !g.isTarget(p) || !g.trusted() || !g.settled(doneCtx) {
		return false
	}
	return g.try.TryReadAt(oid, buf, off)
}

func (g *Gateway) read(ctx context.Context, p plan, oid uint64, off int64, buf []byte) error {
	// Local first when this node is one of the copies: no network. A copy
	// here that the epoch does not place here may be outdated.
	localBad := false
	// last is the error to report if no copy answers; nil stands for
	// NO_OBJ, built only then (a read served locally allocates nothing).
	var last error
	if g.isTarget(p) && g.trusted() && g.settled(ctx) && g.store.Exists(oid) {
		err := g.store.ReadAt(ctx, oid, buf, off)
		if err == nil {
			return nil
		}
		if localBad = errors.Is(err, store.ErrChecksum); localBad {
			g.log.Warn("local copy is bad; reading another", "oid", fmt.Sprintf("%016x", oid), "err", err)
			last = err
		}
	}
	var bad []proto.Node // targets whose copy answered EIO: repaired once one read succeeds
	tried := map[proto.NodeID]bool{g.self: true}
	try := func(n proto.Node) bool {
		if tried[n.NodeID] {
			return false
		}
		tried[n.NodeID] = true
		err := g.peerRead(ctx, n, p.epoch, oid, off, buf)
		if err == nil {
			if localBad || len(bad) > 0 {
				g.repairAfterRead(ctx, p, oid, n, localBad, bad)
			}
			return true
		}
		if isBadCopy(err) && slices.ContainsFunc(p.targets, func(t proto.Node) bool { return t.Same(n.NodeID) }) {
			bad = append(bad, n)
		}
		// An epoch mismatch is retried; otherwise a copy that exists but
		// failed (EIO), or a node that could not be asked (down, cut
		// off: it may hold the copy), is reported rather than a node that
		// has none.
		if proto.ResultOf(err) == proto.ResOldNodeVer || proto.ResultOf(err) == proto.ResNewNodeVer {
			last = err
		} else if !errors.Is(last, proto.ResOldNodeVer) && !(errors.Is(err, proto.ResNoObj) && (proto.ResultOf(last) == proto.ResEIO || retryable(last))) {
			last = err
		}
		return false
	}
	for _, n := range p.targets {
		if try(n) {
			return nil
		}
	}
	// Not where the current epoch puts it (it has not been moved yet):
	// a live node may still hold a copy; the targets of the newest past
	// epochs first (an older leftover is a last resort, placement.Rank).
	for _, n := range placement.Rank(g.pastRings(p.epoch), oid, p.copies, g.liveNodes()) {
		if g.isSelf(n) {
			// This node's own copy, if it is not a target: ranked like
			// any other holder's.
			if !g.isTarget(p) && g.trusted() && g.settled(ctx) && g.store.Exists(oid) && g.store.ReadAt(ctx, oid, buf, off) == nil {
				return nil
			}
			continue
		}
		if n.NrVnodes > 0 && try(n) {
			return nil
		}
	}
	if last == nil {
		return fmt.Errorf("read %016x: %w", oid, proto.ResNoObj)
	}
	return last
}

// pastRings returns the rings of the epochs before epoch, newest first,
// at most placement.HistoryDepth of them. Past epochs never change: their rings are
// built once.
func (g *Gateway) pastRings(epoch uint32) []*placement.Ring {
	var lists [][]proto.Node
	var ctime uint64
	g.cluster.View(func(s *cluster.State) {
		ctime = s.Ctime
		for e := epoch - 1; e >= 1 && epoch-e <= placement.HistoryDepth; e-- {
			lists = append(lists, s.EpochNodes(e))
		}
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.past == nil || g.pastCtime != ctime {
		g.past, g.pastCtime = map[uint32]*placement.Ring{}, ctime
	}
	for e := range g.past {
		if e+placement.HistoryDepth < epoch || e >= epoch {
			delete(g.past, e)
		}
	}
	rings := make([]*placement.Ring, 0, len(lists))
	for i, nodes := range lists {
		e := epoch - 1 - uint32(i)
		r := g.past[e]
		if r == nil {
			r = placement.New(nodes)
			g.past[e] = r
		}
		rings = append(rings, r)
	}
	return rings
}

func (g *Gateway) liveNodes() []proto.Node {
	var nodes []proto.Node
	g.cluster.View(func(s *cluster.State) { nodes = s.Nodes() })
	return nodes
}

// forEach runs f for every target in parallel and returns the first error.
// The first target runs on the calling goroutine, which would otherwise
// only wait: one goroutine and one wake-up less per copy written.
func forEach(targets []proto.Node, f func(n proto.Node) error) error {
	if len(targets) == 1 {
		return f(targets[0])
	}
	errs := make(chan error, len(targets)-1)
	for _, n := range targets[1:] {
		go func() { errs <- f(n) }()
	}
	first := f(targets[0])
	for range targets[1:] {
		if err := <-errs; err != nil && (first == nil || retryable(err)) {
			first = err
		}
	}
	return first
}

// maxPipelined is the largest write whose copies are sent pipelined from
// the writer's goroutine. A request sent with client.Start may make that
// goroutine the connection's writer for the requests queued behind it
// too (flat combining); with large payloads, writes that block on a full
// socket, that would hold back its own local copy: those keep a
// goroutine per copy, whose cost is small beside the copying.
const maxPipelined = 64 << 10

// forEachPipelined is forEach for a change that local makes to this
// node's copy and start sends to a peer's without waiting: the peers'
// requests go out first, the local change runs meanwhile on the calling
// goroutine, then the replies are collected. It returns the first error,
// preferring a retryable one (as forEach).
func (g *Gateway) forEachPipelined(ctx context.Context, targets []proto.Node, local func() error, start func(n proto.Node) (PeerCall, error)) error {
	var buf [4]PeerCall
	calls := buf[:0]
	var first error
	note := func(err error) {
		if err != nil && (first == nil || retryable(err)) {
			first = err
		}
	}
	self := false
	for _, n := range targets {
		if g.isSelf(n) {
			self = true
			continue
		}
		k, err := start(n)
		if err != nil {
			note(err)
			continue
		}
		calls = append(calls, k)
	}
	if self {
		note(local())
	}
	for _, k := range calls {
		_, _, err := k.Wait(ctx)
		note(err)
	}
	return first
}

func (g *Gateway) writable(oid uint64, p plan) error {
	if p.readonly {
		return fmt.Errorf("%016x: %w", oid, proto.ResReadonly)
	}
	if len(p.targets) == 0 || p.strict {
		return fmt.Errorf("%016x: not enough nodes for its copies: %w", oid, proto.ResHalt)
	}
	return nil
}

// writeBack reports whether flags ask for a write that is stable only
// after the next Flush.
func writeBack(flags uint16) bool { return flags&proto.FlagCmdCache != 0 }

// WriteObject writes data into the existing object oid at off on every
// copy; it is on stable storage on all of them when it returns, or, with
// proto.FlagCmdCache in flags, after the next Flush.
func (g *Gateway) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if g.ecPolicy(ctx, oid).Erasure() {
		return g.ecWrite(ctx, oid, 0, off, data, flags, false)
	}
	return g.writeRange(ctx, oid, off, int64(len(data)), flags, func(p plan, synced bool) error {
		change := func(n proto.Node) error {
			if g.isSelf(n) {
				return g.localChange(ctx, oid, func() error { return g.store.WriteAt(ctx, oid, data, off, synced) })
			}
			return g.peerWrite(ctx, n, p.epoch, proto.OpWritePeer, oid, off, data, synced)
		}
		var start func(n proto.Node) (PeerCall, error)
		if len(data) <= maxPipelined {
			start = func(n proto.Node) (PeerCall, error) {
				return g.startPeerWrite(ctx, n, p.epoch, proto.OpWritePeer, oid, off, data, synced)
			}
		}
		return g.changeCopies(ctx, p, oid, change, start)
	})
}

// changeRange changes [off, off+n) of the existing object oid on every
// copy with change (a write or a punch of one copy), in the current
// epoch's plan, retried across epoch changes (writeRange).
func (g *Gateway) changeRange(ctx context.Context, oid uint64, off, n int64, flags uint16, change func(p plan, t proto.Node, synced bool) error) error {
	return g.writeRange(ctx, oid, off, n, flags, func(p plan, synced bool) error {
		return g.changeCopies(ctx, p, oid, func(t proto.Node) error { return change(p, t, synced) }, nil)
	})
}

// writeRange runs write, a change of [off, off+n) of oid on its copies or
// strips, with the current epoch's plan once the plan allows a write there
// (writable, in range), again after each retryable failure (withRetry).
// Without proto.FlagCmdCache in flags write must leave every copy stable
// (synced); with it, the change is stable after the next Flush, which
// then counts it.
func (g *Gateway) writeRange(ctx context.Context, oid uint64, off, n int64, flags uint16, write func(p plan, synced bool) error) error {
	synced := !writeBack(flags)
	if !synced {
		defer g.cached.Add(1)
	}
	return g.withWriteRetry(ctx, func() error {
		p := g.plan(ctx, oid)
		if err := g.writable(oid, p); err != nil {
			return err
		}
		if err := checkRange(oid, p.size, off, int(n)); err != nil {
			return err
		}
		return write(p, synced)
	})
}

// changeCopies runs change (a write or punch of part of oid) on every copy
// in parallel. A copy that answers EIO is repaired first (healedWrite).
// A target without the object, one the current epoch expects but that was
// never moved there (when no target has it, recovery has not moved it
// yet), gets a copy from a holder and then the change too (fill).
//
// With start, which sends the change to a peer without waiting for its
// reply, the changes of the peers' copies are sent first and the local
// copy's change runs meanwhile on the calling goroutine (pipelined): no
// goroutine and no wake-up per copy.
func (g *Gateway) changeCopies(ctx context.Context, p plan, oid uint64, change func(n proto.Node) error, start func(n proto.Node) (PeerCall, error)) error {
	var missing []proto.Node
	var err error
	switch {
	case len(p.targets) == 1:
		// One copy: changed on this goroutine, with nothing shared to
		// collect (and nothing allocated for it).
		n := p.targets[0]
		if err = g.healedWrite(ctx, p, oid, n, func() error { return change(n) }); errors.Is(err, proto.ResNoObj) {
			missing, err = p.targets, nil
		}
	case start != nil:
		missing, err = g.changePipelined(ctx, p, oid, change, start)
	default:
		missing, err = g.changeEach(ctx, p, oid, change)
	}
	if err != nil {
		return err
	}
	for _, n := range missing {
		healed := func(n proto.Node) error {
			return g.healedWrite(ctx, p, oid, n, func() error { return change(n) })
		}
		if err := g.fill(ctx, p, oid, n, healed); err != nil {
			return err
		}
	}
	return nil
}

// changeEach is changeCopies' first pass without start: every copy in
// parallel (forEach). It returns the targets that answered NO_OBJ, and
// the first other error, preferring a retryable one.
func (g *Gateway) changeEach(ctx context.Context, p plan, oid uint64, change func(n proto.Node) error) ([]proto.Node, error) {
	var mu sync.Mutex
	var missing []proto.Node
	err := forEach(p.targets, func(n proto.Node) error {
		err := g.healedWrite(ctx, p, oid, n, func() error { return change(n) })
		if errors.Is(err, proto.ResNoObj) {
			mu.Lock()
			missing = append(missing, n)
			mu.Unlock()
			return nil
		}
		return err
	})
	return missing, err
}

// changePipelined is changeCopies' first pass with start: it returns the
// targets that answered NO_OBJ, and the first other error, preferring a
// retryable one (as forEach).
func (g *Gateway) changePipelined(ctx context.Context, p plan, oid uint64, change func(n proto.Node) error, start func(n proto.Node) (PeerCall, error)) (missing []proto.Node, first error) {
	type remote struct {
		n   proto.Node
		k   PeerCall
		err error
	}
	var buf [4]remote
	remotes := buf[:0]
	local := -1
	for i, n := range p.targets {
		if g.isSelf(n) {
			local = i
			continue
		}
		k, err := start(n)
		remotes = append(remotes, remote{n: n, k: k, err: err})
	}
	note := func(n proto.Node, err error) {
		switch {
		case errors.Is(err, proto.ResNoObj):
			missing = append(missing, n)
		case err != nil && (first == nil || retryable(err)):
			first = err
		}
	}
	if local >= 0 {
		n := p.targets[local]
		note(n, g.healedWrite(ctx, p, oid, n, func() error { return change(n) }))
	}
	for _, r := range remotes {
		err := r.err
		if err == nil {
			_, _, err = r.k.Wait(ctx)
		}
		if isBadCopy(err) {
			// Repaired, then changed again (healedWrite): its first
			// attempt is the one that failed.
			failed := err
			err = g.healedWrite(ctx, p, oid, r.n, func() error {
				if f := failed; f != nil {
					failed = nil
					return f
				}
				return change(r.n)
			})
		}
		note(r.n, err)
	}
	return missing, first
}

// fill gives n, a target without oid, a copy read from a holder (NO_OBJ if
// none has it), then runs change, the caller's own write or punch, on n.
// The copy is created only if n still has none (FlagCmdExcl): two writes
// filling n at once must not replace each other's result, and the range
// change after it puts back whatever the copy read before it missed.
func (g *Gateway) fill(ctx context.Context, p plan, oid uint64, n proto.Node, change func(n proto.Node) error) error {
	full := make([]byte, p.size)
	if err := g.read(ctx, p, oid, 0, full); err != nil {
		return fmt.Errorf("copy %016x to %s: %w", oid, n.NodeID, err)
	}
	var err error
	if g.isSelf(n) {
		err = g.localWrite(ctx, oid, func() error {
			if g.store.Exists(oid) {
				return nil
			}
			return g.store.Create(ctx, oid, p.size, 0, full, true)
		})
	} else {
		r := peerReq(proto.OpCreateAndWritePeer, p.epoch, oid, 0)
		r.Flags |= proto.FlagCmdExcl
		_, _, err = g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, full, nil)
	}
	if err != nil {
		return err
	}
	return change(n)
}

// CreateAndWrite creates oid at its full size, zero-filled, with data at
// off, on every copy. A copy that exists already only gets data written
// (store.CreateOrWrite), unless data is the whole object. With cowFrom != 0 the object starts as a
// copy of cowFrom instead of zeros. Durability is as for WriteObject.
func (g *Gateway) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	if g.ecPolicy(ctx, oid).Erasure() {
		return g.ecWrite(ctx, oid, cowFrom, off, data, flags, true)
	}
	return g.writeRange(ctx, oid, off, int64(len(data)), flags, func(p plan, synced bool) error {
		off, data := off, data
		if cowFrom != 0 {
			full := make([]byte, p.size)
			if err := g.ReadObject(ctx, cowFrom, 0, full); err != nil {
				return fmt.Errorf("copy-on-write from %016x: %w", cowFrom, err)
			}
			copy(full[off:], data)
			data, off = full, 0
		}
		local := func() error {
			return g.localWrite(ctx, oid, func() error { return g.store.CreateOrWrite(ctx, oid, p.size, off, data, synced) })
		}
		if len(data) <= maxPipelined {
			return g.forEachPipelined(ctx, p.targets, local, func(n proto.Node) (PeerCall, error) {
				return g.startPeerWrite(ctx, n, p.epoch, proto.OpCreateAndWritePeer, oid, off, data, synced)
			})
		}
		return forEach(p.targets, func(n proto.Node) error {
			if g.isSelf(n) {
				return local()
			}
			return g.peerWrite(ctx, n, p.epoch, proto.OpCreateAndWritePeer, oid, off, data, synced)
		})
	})
}

// RemoveObject removes oid from every copy. A copy already gone is fine.
func (g *Gateway) RemoveObject(ctx context.Context, oid uint64) error {
	if g.ecPolicy(ctx, oid).Erasure() {
		return g.ecRemove(ctx, oid)
	}
	return g.withWriteRetry(ctx, func() error {
		p := g.plan(ctx, oid)
		found := false
		var mu sync.Mutex
		err := forEach(p.targets, func(n proto.Node) error {
			var err error
			if g.isSelf(n) {
				err = g.localWrite(ctx, oid, func() error { return g.store.Remove(ctx, oid) })
			} else {
				err = g.peerWrite(ctx, n, p.epoch, proto.OpRemovePeer, oid, 0, nil, true)
			}
			if errors.Is(err, proto.ResNoObj) {
				return nil
			}
			if err == nil {
				mu.Lock()
				found = true
				mu.Unlock()
			}
			return err
		})
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("remove %016x: %w", oid, proto.ResNoObj)
		}
		return nil
	})
}

// Flush makes stable every write-back write this gateway acknowledged
// before the call: every node of the current epoch, this one included,
// syncs the objects it changed without sync since its last flush
// (FLUSH_PEER, store.Flush), all in parallel. A node that fails its flush
// fails Flush (EIO); one that cannot be reached is retried like a write,
// until the epoch drops it (its copies are then rebuilt, synced, by
// recovery from the survivors) or the retries run out.
//
// Write-back is for in-process callers that promise to call Flush (the
// NBD front-end, whose clients send FLUSH or FUA). The native protocol
// handler strips proto.FlagCmdCache from clients' requests: QEMU sets it
// by default, and stops flushing when FLUSH_VDI answers INVALID_PARMS.
func (g *Gateway) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Every write-back write counted before this load was acknowledged
	// before Flush was called, and is covered by the flushes sent below.
	gen := g.cached.Load()
	if gen == g.flushed.Load() {
		return nil
	}
	err := g.withWriteRetry(ctx, func() error {
		var nodes []proto.Node
		var epoch uint32
		g.cluster.View(func(s *cluster.State) { nodes, epoch = s.Nodes(), s.Epoch() })
		self := false
		err := forEach(nodes, func(n proto.Node) error {
			if g.isSelf(n) {
				self = true
				return g.store.Flush(ctx)
			}
			r := proto.NewRequest(proto.OpFlushPeer)
			r.Epoch = epoch
			_, _, err := g.peers.Call(ctx, g.peers.Addr(n.NodeID), &r, nil, nil)
			return err
		})
		if err == nil && !self {
			err = g.store.Flush(ctx) // not a member (yet): its store may still hold writes
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	for {
		old := g.flushed.Load()
		if old >= gen || g.flushed.CompareAndSwap(old, gen) {
			return nil
		}
	}
}
