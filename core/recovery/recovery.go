// Package recovery moves objects to where the current epoch wants them
// (PROTOCOL.md §5.6, DESIGN.md "Recovery"). After every epoch change each
// node works out which objects it should now hold, pulls the ones it lacks
// from the nodes that have them, and moves the copies it should no longer
// hold to the stale area, so that an outdated copy is never served.
//
// A node that was absent from the previous epoch cannot trust any copy it
// holds (writes may have happened without it): it moves everything to the
// stale area first and recovers from the others.
package recovery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// Caller sends one request to a peer (core/gateway.Peers implements it).
type Caller interface {
	Call(ctx context.Context, addr string, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error)
}

// Recovery runs recovery for one node.
type Recovery struct {
	self    proto.NodeID
	store   *store.Store
	cluster cluster.Driver
	peers   Caller
	locks   *store.Locks
	log     *slog.Logger

	mu        sync.Mutex
	cancel    context.CancelFunc
	done      chan struct{}
	epoch     uint32
	total     uint64
	finished  uint64
	running   bool
	moved     uint64 // bytes copied in, for throughput reports
	startedAt time.Time
	// completed is the last epoch whose run finished; checked the last
	// epoch whose untrusted copies (if any) were moved aside.
	completed uint32
	checked   uint32 // persisted in DIR/recovery_checked, for the format
	ctime     uint64 // of this cluster ctime (0: none yet)
	queued    int    // runs started and not finished
	started   uint32 // the epoch the state was at when Start was last called
	retry     time.Duration
	stopped   bool
	throttle  Throttle
}

// checkedFile records the last epoch whose copies were settled (see run),
// so that a restart does not move aside again copies written since.
const checkedFile = "recovery_checked"

// New returns the recovery of node self.
func New(self proto.NodeID, st *store.Store, cl cluster.Driver, peers Caller, locks *store.Locks, log *slog.Logger) *Recovery {
	r := &Recovery{self: self, store: st, cluster: cl, peers: peers, locks: locks, log: log}
	if b, err := os.ReadFile(filepath.Join(st.Dir(), checkedFile)); err == nil {
		var ctime uint64
		var epoch uint32
		if _, err := fmt.Sscanf(string(b), "%x %d", &ctime, &epoch); err == nil {
			r.ctime, r.checked = ctime, epoch
		}
	}
	return r
}

// checkedLocked is the last settled epoch of the cluster formatted at
// ctime (0 for another format). The caller holds r.mu.
func (r *Recovery) checkedLocked(ctime uint64) uint32 {
	if r.ctime != ctime {
		return 0
	}
	return r.checked
}

// setChecked records that the copies of epoch (of the format at ctime)
// are settled.
func (r *Recovery) setChecked(ctime uint64, epoch uint32) {
	r.mu.Lock()
	changed := epoch > r.checkedLocked(ctime)
	if changed {
		r.ctime, r.checked = ctime, epoch
	}
	r.mu.Unlock()
	if changed {
		path := filepath.Join(r.store.Dir(), checkedFile)
		if err := cluster.WriteFileSync(path, fmt.Appendf(nil, "%x %d\n", ctime, epoch)); err != nil {
			r.log.Warn("recovery: record the settled epoch", "err", err)
		}
	}
}

// settleWait bounds how long I/O on local copies waits for them to settle.
const settleWait = 10 * time.Second

// Settle waits until this node's copies are settled for the current
// epoch: the epoch's first recovery run has moved aside those that cannot
// be current (see run). I/O on local copies, by peers and by this node's
// gateway, waits for it: a write landing on a copy about to be moved
// aside would be lost with it, a read would serve it. It reports false
// when they are not settled within settleWait (or ctx ends); the caller
// then leaves the local copies alone.
func (r *Recovery) Settle(ctx context.Context) bool {
	deadline := time.Now().Add(settleWait)
	for {
		var epoch uint32
		var ctime uint64
		r.cluster.View(func(s *cluster.State) { epoch, ctime = s.Epoch(), s.Ctime })
		r.mu.Lock()
		// Settled, or no run coming for this epoch (none queued, and the
		// epoch's OnApply has started one already: the state shows a new
		// epoch just before its Start). A format wipes the store: epoch 1
		// has nothing to settle.
		ok := epoch <= 1 || r.checkedLocked(ctime) >= epoch || r.queued == 0 && r.started >= epoch
		r.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// State reports progress as STAT_RECOVERY does. State carries the last
// epoch this node finished recovering (our use of the field), which peers
// wait for before dropping copies.
func (r *Recovery) State() proto.RecoveryState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.RecoveryState{InRecovery: r.running, State: r.completed, NrFinished: r.finished, NrTotal: r.total}
}

// Trusted reports whether this node's copies may be served in the current
// epoch. A node absent from an epoch since its copies were last settled
// missed writes: until its recovery has moved its old copies aside, none
// of them may be read, by a client or by a peer.
func (r *Recovery) Trusted() bool {
	var epoch uint32
	var ctime uint64
	r.cluster.View(func(s *cluster.State) { epoch, ctime = s.Epoch(), s.Ctime })
	r.mu.Lock()
	settled := r.checkedLocked(ctime)
	r.mu.Unlock()
	if epoch <= 1 || settled >= epoch {
		return true
	}
	span := settledSpan(settled, epoch)
	if span > historyDepth {
		return false
	}
	present := true
	r.cluster.View(func(s *cluster.State) {
		for i := 0; i < span && present; i++ {
			present = r.has(s.EpochNodes(epoch - 1 - uint32(i)))
		}
	})
	return present
}

// Throttle limits recovery to max objects per interval (0: unlimited).
type Throttle struct {
	Max      uint32
	Interval time.Duration
}

// SetThrottle sets the throttle for later objects.
func (r *Recovery) SetThrottle(t Throttle) {
	r.mu.Lock()
	r.throttle = t
	r.mu.Unlock()
}

// GetThrottle returns the throttle.
func (r *Recovery) GetThrottle() Throttle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.throttle
}

// pace sleeps after every Max objects when throttled.
func (r *Recovery) pace(ctx context.Context, done int) {
	t := r.GetThrottle()
	if t.Max == 0 || t.Interval == 0 || done%int(t.Max) != 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(t.Interval):
	}
}

// Start begins recovery for the current epoch, cancelling a run for an
// older one. It returns at once.
func (r *Recovery) Start() {
	var epoch uint32
	r.cluster.View(func(s *cluster.State) { epoch = s.Epoch() })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.started = max(r.started, epoch)
	if r.cancel != nil {
		r.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	prev := r.done
	done := make(chan struct{})
	r.cancel, r.done = cancel, done
	r.queued++
	go func() {
		defer close(done)
		defer func() {
			r.mu.Lock()
			r.queued--
			r.mu.Unlock()
		}()
		if prev != nil {
			<-prev // one run at a time
		}
		// Epochs replayed from the log at start-up arrive in a burst: only
		// the last one is worth a run.
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		r.run(ctx)
	}()
}

// Stop cancels recovery and waits for it.
func (r *Recovery) Stop() {
	r.mu.Lock()
	r.stopped = true
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (r *Recovery) has(nodes []proto.Node) bool {
	for _, n := range nodes {
		if n.Addr == r.self.Addr && n.Port == r.self.Port {
			return true
		}
	}
	return false
}

func (r *Recovery) run(ctx context.Context) {
	var epoch uint32
	var cur []proto.Node
	var history [][]proto.Node // epochs before the current one, newest first
	copies := map[uint32]int{}
	policies := map[uint32]erasure.Policy{} // erasure-coded VDIs (ec.go)
	var def int
	disabled := false
	var ctime uint64
	r.cluster.View(func(s *cluster.State) {
		disabled = s.DisableRecovery
		epoch, ctime = s.Epoch(), s.Ctime
		cur = s.Nodes()
		for e := epoch - 1; e >= 1 && len(history) < historyDepth; e-- {
			history = append(history, s.EpochNodes(e))
		}
		def = int(s.NrCopies)
		for _, v := range s.SortedVids() {
			copies[v] = int(s.Copies(v))
			if st := s.VdiState(v); st != nil && st.CopyPolicy != 0 {
				policies[v] = erasure.Policy(st.CopyPolicy)
			}
		}
	})
	if epoch == 0 || !r.has(cur) {
		return
	}
	if !disabled {
		r.mu.Lock()
		r.epoch, r.running, r.total, r.finished, r.moved, r.startedAt = epoch, true, 0, 0, 0, time.Now()
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.running = false
			r.mu.Unlock()
		}()
	}
	ring := placement.New(cur)
	past := make([]*placement.Ring, len(history))
	for i, nodes := range history {
		past[i] = placement.New(nodes)
	}
	copiesOf := func(oid uint64) int {
		if c, ok := copies[proto.OidToVid(oid)]; ok {
			return c
		}
		return def
	}
	local, err := r.store.List()
	if err != nil {
		r.retryLater(epoch, "list local objects: "+err.Error())
		return
	}
	// Copies that cannot be current are moved aside first, once per epoch
	// (a later run of the same epoch, after recovery is enabled, must not
	// move the copies written since), even with recovery disabled. Judged
	// over every epoch since the copies were last settled (runs of quick
	// successive epochs collapse into one):
	//   - A node absent from one of them missed writes: none of its
	//     copies can be trusted, so none may be served or copied from.
	//   - A copy of an object this node was not a target of in one of
	//     them may have missed that epoch's writes: a leftover that
	//     cleanup had not dropped yet.
	// Copies that are merely no longer placed here stay until every member
	// has recovered this epoch (other nodes may still copy them), see
	// cleanup.
	r.mu.Lock()
	settled := r.checkedLocked(ctime)
	r.mu.Unlock()
	if settled < epoch {
		span := settledSpan(settled, epoch)
		// Beyond the history kept, as if absent.
		absent := span > len(past)
		for i := 0; i < span && !absent; i++ {
			absent = !r.has(past[i].Nodes())
		}
		current := func(oid uint64, c int) bool {
			for i := 0; i < span; i++ {
				if !holdsKey(past[i], oid, c, r.self) {
					return false
				}
			}
			return true
		}
		for _, oid := range local {
			if c := copiesOf(oid); absent || holdsKey(ring, oid, c, r.self) && !current(oid, c) {
				r.stale(oid, epoch)
			}
		}
	}
	r.setChecked(ctime, epoch)
	if disabled {
		r.log.Info("recovery disabled; not recovering", "epoch", epoch)
		return
	}
	// Which objects exist anywhere, and where (complete: every node told).
	where := map[uint64][]proto.Node{}
	complete := true
	for _, n := range cur {
		if n.Addr == r.self.Addr && n.Port == r.self.Port || n.NrVnodes == 0 {
			continue
		}
		oids, err := r.objList(ctx, n, epoch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("recovery: object list", "node", n.NodeID.String(), "err", err)
			complete = false
			continue
		}
		for _, oid := range oids {
			where[oid] = append(where[oid], n)
		}
	}
	// A copy moved aside (by this run or an earlier one, cancelled or
	// disabled before it got here) that no other node has is still the
	// newest there is: it comes back from the stale area, newest first.
	// Only when every node answered: one that did not may have a newer.
	if stale, err := r.store.ListStale(); err == nil && complete {
		newest := map[uint64]uint32{}
		for _, so := range stale {
			newest[so.Oid] = max(newest[so.Oid], so.Epoch)
		}
		for oid, se := range newest {
			plain, _, _ := proto.SplitKey(oid)
			if holdsKey(ring, oid, copiesOf(oid), r.self) && len(where[plain]) == 0 && !r.store.Exists(oid) {
				r.unstale(ctx, oid, se)
			}
		}
	}
	var todo []uint64
	ecTodo := map[uint64]int{} // erasure-coded objects: the strip this node lacks
	for oid := range where {
		if pol := policies[proto.OidToVid(oid)]; pol.Erasure() && proto.IsErasureOid(oid) {
			if i := stripIndex(ring, oid, copiesOf(oid), r.self); i >= 0 && !r.store.Exists(proto.StripKey(oid, i)) {
				ecTodo[oid] = i
			}
			continue
		}
		if ring.Holds(oid, copiesOf(oid), r.self) && !r.store.Exists(oid) {
			todo = append(todo, oid)
		}
	}
	r.mu.Lock()
	r.total = uint64(len(todo) + len(ecTodo))
	r.mu.Unlock()
	failed := 0
	for i, oid := range todo {
		if ctx.Err() != nil {
			return
		}
		if i > 0 {
			r.pace(ctx, i)
		}
		// Newest copies first: a node that stopped being a target earlier
		// may still list an older copy (see placement.Rank).
		holders := placement.Rank(past, oid, copiesOf(oid), where[oid])
		if err := r.recoverOne(ctx, oid, holders, epoch); err != nil {
			r.log.Warn("recovery: object", "oid", fmt.Sprintf("%016x", oid), "err", err)
			failed++
		}
		r.mu.Lock()
		r.finished++
		r.mu.Unlock()
	}
	for oid, i := range ecTodo {
		if ctx.Err() != nil {
			return
		}
		size, _ := r.size(ctx, proto.Node{}, oid)
		if err := r.recoverStrip(ctx, ring, past, policies[proto.OidToVid(oid)], oid, i, size, epoch); err != nil {
			r.log.Warn("recovery: strip", "oid", fmt.Sprintf("%016x", oid), "strip", i, "err", err)
			failed++
		}
		r.mu.Lock()
		r.finished++
		r.mu.Unlock()
	}
	if failed > 0 || !complete {
		// Not complete: peers must not drop copies this node may still
		// need (cleanup waits for State >= epoch). Try again, backing off.
		r.retryLater(epoch, fmt.Sprintf("%d objects failed, object lists complete: %v", failed, complete))
		return
	}
	r.mu.Lock()
	el, moved := time.Since(r.startedAt), r.moved
	r.completed = epoch
	r.running = false
	r.retry = 0
	r.mu.Unlock()
	r.log.Info("recovery done", "epoch", epoch, "objects", len(todo), "bytes", moved,
		"mib_per_s", fmt.Sprintf("%.1f", float64(moved)/(1<<20)/max(el.Seconds(), 1e-3)))
	r.cleanup(ctx, epoch, cur, ring, copiesOf)
}

// retryLater runs recovery again for epoch after a growing delay (1 s to
// 30 s), unless a newer epoch or Stop came first.
func (r *Recovery) retryLater(epoch uint32, why string) {
	r.mu.Lock()
	d := min(max(2*r.retry, time.Second), 30*time.Second)
	r.retry = d
	r.mu.Unlock()
	r.log.Warn("recovery incomplete; retrying", "epoch", epoch, "why", why, "in", d)
	time.AfterFunc(d, func() {
		var now uint32
		r.cluster.View(func(s *cluster.State) { now = s.Epoch() })
		r.mu.Lock()
		again := !r.stopped && now == epoch && r.completed < epoch
		r.mu.Unlock()
		if again {
			r.Start()
		}
	})
}

// settledSpan is how many epochs before epoch its first run judges the
// copies over: those since the last settled one, or since the format when
// none was (0: the store was wiped at the format, and nothing settled
// since).
func settledSpan(settled, epoch uint32) int {
	if epoch <= 1 {
		return 0
	}
	return int(epoch - max(settled, 1))
}

// unstale puts back the copy of oid moved to the stale area in epoch.
func (r *Recovery) unstale(ctx context.Context, oid uint64, epoch uint32) {
	r.locks.Lock(oid)
	defer r.locks.Unlock(oid)
	if r.store.Exists(oid) {
		return // written again meanwhile
	}
	b, err := r.store.ReadStale(oid, epoch)
	if err == nil {
		err = r.store.Create(ctx, oid, int64(len(b)), 0, b, true)
	}
	if err != nil {
		r.log.Warn("recovery: restore the only copy", "oid", fmt.Sprintf("%016x", oid), "err", err)
		return
	}
	r.log.Warn("recovery: no other node has the object; kept this node's older copy", "oid", fmt.Sprintf("%016x", oid))
}

func (r *Recovery) stale(oid uint64, epoch uint32) {
	r.locks.Lock(oid)
	err := r.store.MoveToStale(oid, epoch)
	r.locks.Unlock(oid)
	if err != nil && !errors.Is(err, proto.ResNoObj) {
		r.log.Warn("recovery: move to stale", "oid", fmt.Sprintf("%016x", oid), "err", err)
	}
}

// cleanup waits until every member has finished recovering epoch, then
// drops the copies this node no longer holds and purges the stale area.
// Invariant: a copy is dropped only once every node that should hold the
// object has had the chance to copy it.
func (r *Recovery) cleanup(ctx context.Context, epoch uint32, cur []proto.Node, ring *placement.Ring, copiesOf func(uint64) int) {
	for _, n := range cur {
		if n.Addr == r.self.Addr && n.Port == r.self.Port || n.NrVnodes == 0 {
			continue
		}
		for {
			req := proto.NewRequest(proto.OpStatRecovery)
			buf := make([]byte, proto.RecoveryStateSize)
			_, _, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
			var st proto.RecoveryState
			if err == nil && st.Unmarshal(buf) == nil && st.State >= epoch {
				break
			}
			select {
			case <-ctx.Done():
				return // a newer epoch: its run cleans up
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	local, err := r.store.List()
	if err != nil {
		return
	}
	dropped := 0
	for _, oid := range local {
		if ctx.Err() != nil {
			return
		}
		if !holdsKey(ring, oid, copiesOf(oid), r.self) && !unplaced(ring, oid, copiesOf(oid)) {
			r.stale(oid, epoch)
			dropped++
		}
	}
	if err := r.store.PurgeStale(epoch); err != nil {
		r.log.Warn("recovery: purge stale", "err", err)
	}
	r.log.Info("recovery cleanup", "epoch", epoch, "dropped", dropped)
}

// historyDepth is how many past epochs rank the sources of a copy; a
// holder that was a target only before them ranks last.
const historyDepth = 16

// recoverOne copies oid from the first holder that has it. Holding the
// object's lock, a copy that appeared meanwhile (a write repaired it) wins.
func (r *Recovery) recoverOne(ctx context.Context, oid uint64, holders []proto.Node, epoch uint32) error {
	r.locks.Lock(oid)
	defer r.locks.Unlock(oid)
	if r.store.Exists(oid) {
		return nil
	}
	var last error
	var bad []proto.Node // holders whose copy fails its checksums (EIO)
	for _, n := range holders {
		size, err := r.size(ctx, n, oid)
		if err != nil {
			last = err
			continue
		}
		buf := make([]byte, size)
		req := proto.NewRequest(proto.OpReadPeer)
		req.Flags = proto.FlagCmdRecovery
		req.Epoch = epoch
		req.SetObj(proto.ObjArgs{Oid: oid, TgtEpoch: epoch})
		_, got, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
		if err != nil {
			if proto.ResultOf(err) == proto.ResEIO {
				bad = append(bad, n)
			}
			last = err
			continue
		}
		if got != len(buf) {
			last = fmt.Errorf("short read %d of %d", got, len(buf))
			continue
		}
		if err := r.store.Create(ctx, oid, size, 0, buf, true); err != nil {
			return err
		}
		r.mu.Lock()
		r.moved += uint64(size)
		r.mu.Unlock()
		r.repairHolders(ctx, oid, epoch, bad)
		return nil
	}
	if last == nil {
		last = proto.ResNoObj
	}
	return last
}

// repairHolders asks each holder whose copy of oid was bad to repair it
// from ours, which was just stored from a verified read (REPAIR_REPLICA;
// the holder rewrites only its bad chunks, under its own lock).
func (r *Recovery) repairHolders(ctx context.Context, oid uint64, epoch uint32, bad []proto.Node) {
	for _, n := range bad {
		req := gateway.RepairRequest(epoch, oid, r.self, gateway.FlagRepairBadChunks)
		if _, _, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, nil); err != nil {
			r.log.Warn("recovery: repair bad copy", "oid", fmt.Sprintf("%016x", oid), "node", n.NodeID.String(), "err", err)
			continue
		}
		r.log.Warn("recovery: repaired bad copy", "oid", fmt.Sprintf("%016x", oid), "node", n.NodeID.String())
	}
}

// size is the object's full size according to the vdi state.
func (r *Recovery) size(_ context.Context, _ proto.Node, oid uint64) (int64, error) {
	var shift uint8
	r.cluster.View(func(s *cluster.State) {
		shift = s.BlockSizeShift
		if v := s.VdiState(proto.OidToVid(oid)); v != nil && v.BlockSizeShift != 0 {
			shift = v.BlockSizeShift
		}
	})
	return proto.ObjectSize(oid, shift), nil
}

// objList asks n for every object it stores, growing the buffer on
// BUFFER_SMALL.
func (r *Recovery) objList(ctx context.Context, n proto.Node, epoch uint32) ([]uint64, error) {
	for size := 1 << 20; size <= 1<<30; size *= 4 {
		req := proto.NewRequest(proto.OpGetObjList)
		req.Epoch = epoch
		buf := make([]byte, size)
		rsp, got, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
		if rsp.Result == proto.ResBufferSmall {
			continue
		}
		if err != nil {
			return nil, err
		}
		oids := make([]uint64, got/8)
		for i := range oids {
			oids[i] = binary.LittleEndian.Uint64(buf[8*i:])
		}
		return oids, nil
	}
	return nil, fmt.Errorf("object list of %s too large", n.NodeID)
}
