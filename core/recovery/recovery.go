// Package recovery moves objects to where the current epoch wants them
// (docs/protocol.md §5.6, docs/design.md §6 "Recovery"). After every
// epoch change each node works out which objects it should now hold,
// pulls the ones it lacks from the nodes that have them, and moves the
// copies it should no longer hold to the stale area, so that an outdated
// copy is never served.
//
// A node that was absent from the previous epoch cannot trust any copy it
// holds (writes may have happened without it): it moves everything to the
// stale area first and recovers from the others.
//
// The decisions are a pure function (plan, in plan.go); this file gathers
// their inputs and carries them out (run).
package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store"
)

// Caller sends one request to a peer (core/gateway.Peers implements it).
type Caller interface {
	Call(ctx context.Context, addr string, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error)
}

// LocalStore is this node's own copies: a store.Store, or an md.Store
// over several disks (store/md).
type LocalStore interface {
	Dir() string
	Exists(oid uint64) bool
	ReadAt(ctx context.Context, oid uint64, buf []byte, off int64) error
	Create(ctx context.Context, oid uint64, size int64, off int64, data []byte, sync bool) error
	List() ([]uint64, error)
	ListStale() ([]store.StaleObject, error)
	ReadStale(oid uint64, epoch uint32) ([]byte, error)
	MoveToStale(oid uint64, epoch uint32) error
	PurgeStale(maxEpoch uint32) error
	// Flush syncs every object written without a sync so far.
	Flush(ctx context.Context) error
}

// Recovery runs recovery for one node.
//
// Its state is grouped by what each mutex protects. Lock order: runs
// before settle (Start); no other two are ever held together.
type Recovery struct {
	self    proto.NodeID
	store   LocalStore
	cluster cluster.Driver
	peers   Caller
	locks   *store.Locks
	log     *slog.Logger

	// settle is how far this node's copies are settled: what Settle and
	// Trusted decide on. changed is closed, and replaced, at every change
	// of these fields, which wakes Settle's waiters.
	settle struct {
		sync.Mutex
		ctime   uint64 // the format epoch belongs to (0: none settled yet)
		epoch   uint32 // last settled epoch, persisted in DIR/recovery_checked
		started uint32 // the cluster's epoch when Start was last called
		queued  int    // runs started and not finished
		changed chan struct{}
	}

	// runs orders the runs: one at a time, each newer one cancelling the
	// one before.
	runs struct {
		sync.Mutex
		cancel  context.CancelFunc
		done    chan struct{} // closed when the last run started has ended
		stopped bool
		retry   time.Duration // the last retry delay (grows to 30 s)
	}

	// progress is what STAT_RECOVERY reports.
	progress struct {
		sync.Mutex
		running   bool
		epoch     uint32
		total     uint64 // objects to fetch in this run
		finished  uint64
		moved     uint64 // bytes copied in, for throughput reports
		startedAt time.Time
		completed uint32 // the last epoch whose run finished
		// done is closed, and replaced, whenever completed rises: it
		// wakes WaitRecovered.
		done chan struct{}
	}

	throttle atomic.Pointer[Throttle]
}

// checkedFile records the last epoch whose copies were settled (see run),
// so that a restart does not move aside again copies written since.
const checkedFile = "recovery_checked"

// New returns the recovery of node self.
func New(self proto.NodeID, st LocalStore, cl cluster.Driver, peers Caller, locks *store.Locks, log *slog.Logger) *Recovery {
	r := &Recovery{self: self, store: st, cluster: cl, peers: peers, locks: locks, log: log}
	r.settle.changed = make(chan struct{})
	r.progress.done = make(chan struct{})
	if b, err := os.ReadFile(filepath.Join(st.Dir(), checkedFile)); err == nil {
		var ctime uint64
		var epoch uint32
		if _, err := fmt.Sscanf(string(b), "%x %d", &ctime, &epoch); err == nil {
			r.settle.ctime, r.settle.epoch = ctime, epoch
		}
	}
	return r
}

// settledLocked is the last settled epoch of the cluster formatted at
// ctime (0 for another format). r.settle must be held.
func (r *Recovery) settledLocked(ctime uint64) uint32 {
	if r.settle.ctime != ctime {
		return 0
	}
	return r.settle.epoch
}

func (r *Recovery) settled(ctime uint64) uint32 {
	r.settle.Lock()
	defer r.settle.Unlock()
	return r.settledLocked(ctime)
}

// notifyLocked wakes every Settle waiting on the old state. r.settle must
// be held.
func (r *Recovery) notifyLocked() {
	close(r.settle.changed)
	r.settle.changed = make(chan struct{})
}

// setSettled records that the copies of epoch (of the format at ctime)
// are settled.
func (r *Recovery) setSettled(ctime uint64, epoch uint32) {
	r.settle.Lock()
	changed := epoch > r.settledLocked(ctime)
	if changed {
		r.settle.ctime, r.settle.epoch = ctime, epoch
		r.notifyLocked()
	}
	r.settle.Unlock()
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
// be current (see plan). I/O on local copies, by peers and by this node's
// gateway, waits for it: a write landing on a copy about to be moved
// aside would be lost with it, a read would serve it. It reports false
// when they are not settled within settleWait (or ctx ends); the caller
// then leaves the local copies alone.
//
// Waiters sleep until the settle state changes (a run settles, starts or
// ends). The cluster's epoch rises before its Start, which wakes them.
func (r *Recovery) Settle(ctx context.Context) bool {
	var deadline <-chan time.Time
	for {
		epoch, ctime := r.epochCtime()
		r.settle.Lock()
		// Settled, or no run coming for this epoch (none queued, and the
		// epoch's OnApply has started one already: the state shows a new
		// epoch just before its Start). A format wipes the store: epoch 1
		// has nothing to settle.
		ok := epoch <= 1 || r.settledLocked(ctime) >= epoch || r.settle.queued == 0 && r.settle.started >= epoch
		changed := r.settle.changed
		r.settle.Unlock()
		if ok {
			return true
		}
		if deadline == nil {
			t := time.NewTimer(settleWait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// epochCtime returns the current epoch and the format's ctime (every
// read and write asks, through Settle and Trusted).
func (r *Recovery) epochCtime() (uint32, uint64) {
	s := r.cluster.ReadState()
	epoch, ctime := s.Epoch(), s.Ctime
	r.cluster.ReleaseState()
	return epoch, ctime
}

// State reports progress as STAT_RECOVERY does. State carries the last
// epoch this node finished recovering (our use of the field), which peers
// wait for before dropping copies.
func (r *Recovery) State() proto.RecoveryState {
	r.progress.Lock()
	defer r.progress.Unlock()
	return proto.RecoveryState{InRecovery: r.progress.running, State: r.progress.completed,
		NrFinished: r.progress.finished, NrTotal: r.progress.total}
}

// Trusted reports whether this node's copies may be served in the current
// epoch. A node absent from an epoch since its copies were last settled
// missed writes: until its recovery has moved its old copies aside, none
// of them may be read, by a client or by a peer.
func (r *Recovery) Trusted() bool {
	epoch, ctime := r.epochCtime()
	settled := r.settled(ctime)
	if epoch <= 1 || settled >= epoch {
		return true
	}
	span := settledSpan(settled, epoch)
	if span > placement.HistoryDepth {
		return false
	}
	present := true
	r.cluster.View(func(s *cluster.State) {
		for i := 0; i < span && present; i++ {
			present = hasNode(s.EpochNodes(epoch-1-uint32(i)), r.self)
		}
	})
	return present
}

// WaitRecovered waits until this node has finished recovering epoch (or
// a later one), and reports whether it has; false when ctx ends or
// recovery is stopped first.
func (r *Recovery) WaitRecovered(ctx context.Context, epoch uint32) bool {
	for {
		r.runs.Lock()
		stopped := r.runs.stopped
		r.runs.Unlock()
		r.progress.Lock()
		ok, done := r.progress.completed >= epoch, r.progress.done
		r.progress.Unlock()
		if ok || stopped {
			return ok
		}
		select {
		case <-done:
		case <-ctx.Done():
			return false
		}
	}
}

// Throttle limits recovery to max objects per interval (0: unlimited).
type Throttle struct {
	Max      uint32
	Interval time.Duration
}

// SetThrottle sets the throttle for later objects.
func (r *Recovery) SetThrottle(t Throttle) { r.throttle.Store(&t) }

// GetThrottle returns the throttle.
func (r *Recovery) GetThrottle() Throttle {
	if t := r.throttle.Load(); t != nil {
		return *t
	}
	return Throttle{}
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

// startDelay is how long a run waits before starting: epochs replayed
// from the log at start-up arrive in a burst (within milliseconds: they
// are applied from the local log), and only the last one is worth a run.
// Every node's run for a new epoch waits it, so it adds to the time a
// joining node takes to hold its share.
const startDelay = 100 * time.Millisecond

// Start begins recovery for the current epoch, cancelling a run for an
// older one. It returns at once.
func (r *Recovery) Start() {
	var epoch uint32
	r.cluster.View(func(s *cluster.State) { epoch = s.Epoch() })
	r.runs.Lock()
	if r.runs.stopped {
		r.runs.Unlock()
		return
	}
	if r.runs.cancel != nil {
		r.runs.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	prev := r.runs.done
	done := make(chan struct{})
	r.runs.cancel, r.runs.done = cancel, done
	// Counted queued before Start returns (and under runs, so in the
	// order of the runs): Settle must not see the new epoch with no run
	// queued for it.
	r.settle.Lock()
	r.settle.started = max(r.settle.started, epoch)
	r.settle.queued++
	r.notifyLocked()
	r.settle.Unlock()
	r.runs.Unlock()
	go func() {
		defer close(done)
		defer func() {
			r.settle.Lock()
			r.settle.queued--
			r.notifyLocked()
			r.settle.Unlock()
		}()
		if prev != nil {
			<-prev // one run at a time
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(startDelay):
		}
		r.run(ctx)
	}()
}

// Stop cancels recovery and waits for it.
func (r *Recovery) Stop() {
	r.runs.Lock()
	r.runs.stopped = true
	cancel, done := r.runs.cancel, r.runs.done
	r.runs.Unlock()
	r.progress.Lock()
	close(r.progress.done) // wakes WaitRecovered, which sees stopped
	r.progress.done = make(chan struct{})
	r.progress.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// view reads what a run needs of the cluster state.
func (r *Recovery) view() View {
	v := View{Self: r.self, Copies: map[uint32]int{}, Policies: map[uint32]erasure.Policy{}}
	r.cluster.View(func(s *cluster.State) {
		v.Disabled = s.DisableRecovery
		v.Epoch, v.Ctime = s.Epoch(), s.Ctime
		v.Nodes = s.Nodes()
		for e := v.Epoch - 1; v.Epoch > 1 && e >= 1 && len(v.History) < placement.HistoryDepth; e-- {
			v.History = append(v.History, s.EpochNodes(e))
		}
		v.DefaultCopies = int(s.NrCopies)
		for _, vid := range s.SortedVids() {
			v.Copies[vid] = int(s.Copies(vid))
			if st := s.VdiState(vid); st != nil && st.CopyPolicy != 0 {
				v.Policies[vid] = erasure.Policy(st.CopyPolicy)
			}
		}
	})
	return v
}

// local lists this node's live and stale copies. A stale area that cannot
// be listed counts as empty: nothing is put back from it.
func (r *Recovery) local() (Local, error) {
	objs, err := r.store.List()
	if err != nil {
		return Local{}, fmt.Errorf("list local objects: %w", err)
	}
	l := Local{Objects: objs, Stale: map[uint64]uint32{}}
	stale, err := r.store.ListStale()
	if err != nil {
		r.log.Warn("recovery: list the stale area", "err", err)
	}
	for _, so := range stale {
		l.Stale[so.Oid] = max(l.Stale[so.Oid], so.Epoch)
	}
	return l, nil
}

// remote asks every other member for its object list and the list of
// its stale area (a member without vnodes stores no live copy, but may
// keep stale ones from before).
func (r *Recovery) remote(ctx context.Context, v View) Remote {
	rm := Remote{Where: map[uint64][]proto.Node{}, Stale: map[uint64]StaleSource{}, Complete: true}
	for _, n := range v.Nodes {
		if n.Same(r.self) {
			continue
		}
		if n.NrVnodes > 0 {
			oids, err := r.objList(ctx, n, v.Epoch)
			if err != nil {
				if ctx.Err() != nil {
					rm.Complete = false
					return rm
				}
				r.log.Warn("recovery: object list", "node", n.NodeID.String(), "err", err)
				rm.Complete = false
				continue
			}
			for _, oid := range oids {
				rm.Where[oid] = append(rm.Where[oid], n)
			}
		}
		stale, err := r.staleList(ctx, n, v.Epoch)
		if err != nil {
			if ctx.Err() != nil {
				rm.Complete = false
				return rm
			}
			r.log.Warn("recovery: stale list", "node", n.NodeID.String(), "err", err)
			rm.Complete = false
			continue
		}
		for _, e := range stale {
			if _, _, strip := proto.SplitKey(e.Key); strip {
				continue // strips are rebuilt from the others (ec.go)
			}
			switch cur, ok := rm.Stale[e.Key]; {
			case !ok || e.Epoch > cur.Epoch:
				rm.Stale[e.Key] = StaleSource{Epoch: e.Epoch, Nodes: []proto.Node{n}}
			case e.Epoch == cur.Epoch && !hasNode(cur.Nodes, n.NodeID):
				cur.Nodes = append(cur.Nodes, n)
				rm.Stale[e.Key] = cur
			}
		}
	}
	return rm
}

// run recovers the current epoch: settle (set aside what cannot be
// current), then fetch what is missing, then, once every member is done,
// drop what is no longer placed here. Each step's decisions come from
// plan, on inputs read just before it.
func (r *Recovery) run(ctx context.Context) {
	v := r.view()
	if v.Epoch == 0 || !v.member() {
		return
	}
	if !v.Disabled {
		r.progress.Lock()
		p := &r.progress
		p.epoch, p.running, p.total, p.finished, p.moved, p.startedAt = v.Epoch, true, 0, 0, 0, time.Now()
		r.progress.Unlock()
		defer func() {
			r.progress.Lock()
			r.progress.running = false
			r.progress.Unlock()
		}()
	}
	local, err := r.local()
	if err != nil {
		r.retryLater(v.Epoch, err.Error())
		return
	}
	// Once per epoch, even with recovery disabled: a later run of the same
	// epoch (after recovery is enabled) must not set aside the copies
	// written since.
	stale := plan(v, local, nil, r.settled(v.Ctime)).Stale
	for _, sc := range stale {
		r.setAside(sc.Oid, sc.Epoch)
	}
	if len(stale) > 0 {
		r.log.Info("recovery: set aside copies that may have missed writes", "epoch", v.Epoch, "copies", len(stale))
	}
	r.setSettled(v.Ctime, v.Epoch)
	if v.Disabled {
		r.log.Info("recovery disabled; not recovering", "epoch", v.Epoch)
		return
	}

	listStart := time.Now()
	remote := r.remote(ctx, v)
	listed := time.Since(listStart)
	if ctx.Err() != nil {
		return
	}
	if local, err = r.local(); err != nil {
		r.retryLater(v.Epoch, err.Error())
		return
	}
	p := plan(v, local, &remote, v.Epoch)
	for _, sc := range p.Unstale {
		r.unstale(ctx, sc)
	}
	for _, oid := range p.Handover {
		if ctx.Err() != nil {
			return
		}
		r.setAside(oid, v.Epoch-1) // not a target in v.Epoch
	}
	if len(p.Handover) > 0 {
		r.log.Info("recovery: set aside copies now held elsewhere", "epoch", v.Epoch, "copies", len(p.Handover))
	}
	r.progress.Lock()
	r.progress.total = uint64(len(p.Fetch) + len(p.FetchStrips))
	r.progress.Unlock()
	failed := r.fetchAll(ctx, p.Fetch, v.Epoch)
	if ctx.Err() != nil {
		return
	}
	if len(p.FetchStrips) > 0 {
		ring := placement.New(v.Nodes)
		past := make([]*placement.Ring, len(v.History))
		for i, nodes := range v.History {
			past[i] = placement.New(nodes)
		}
		for k, f := range p.FetchStrips {
			if ctx.Err() != nil {
				return
			}
			if i := len(p.Fetch) + k; i > 0 {
				r.pace(ctx, i) // the throttle counts objects and strips alike
			}
			pol := v.Policies[proto.OidToVid(f.Oid)]
			if err := r.recoverStrip(ctx, ring, past, pol, f.Oid, f.Index, r.size(f.Oid), v.Epoch); err != nil {
				r.log.Warn("recovery: strip", "oid", fmt.Sprintf("%016x", f.Oid), "strip", f.Index, "err", err)
				failed++
			}
			r.progress.Lock()
			r.progress.finished++
			r.progress.Unlock()
		}
	}
	// The copies fetched are written without a sync each (fetchAll): one
	// flush makes them durable before this node reports the epoch
	// recovered, after which the others may drop theirs.
	flushStart := time.Now()
	err = r.store.Flush(ctx)
	flushed := time.Since(flushStart)
	if err != nil {
		r.retryLater(v.Epoch, fmt.Sprintf("flush the copies fetched: %v", err))
		return
	}
	if failed > 0 || !remote.Complete {
		// Not complete: peers must not drop copies this node may still
		// need (cleanup waits for State >= epoch). Try again, backing off.
		r.retryLater(v.Epoch, fmt.Sprintf("%d objects failed, object lists complete: %v", failed, remote.Complete))
		return
	}
	r.progress.Lock()
	el, moved := time.Since(r.progress.startedAt), r.progress.moved
	r.progress.completed = v.Epoch
	r.progress.running = false
	close(r.progress.done)
	r.progress.done = make(chan struct{})
	r.progress.Unlock()
	r.runs.Lock()
	r.runs.retry = 0
	r.runs.Unlock()
	r.log.Info("recovery done", "epoch", v.Epoch, "objects", len(p.Fetch), "bytes", moved,
		"mib_per_s", fmt.Sprintf("%.1f", float64(moved)/(1<<20)/max(el.Seconds(), 1e-3)),
		"took", el.Round(time.Millisecond), "lists", listed.Round(time.Millisecond), "flush", flushed.Round(time.Millisecond))
	r.cleanup(ctx, v)
}

// fetchWorkers is how many objects a run copies in at once: a copy waits
// mostly on the peer and on the disk, and a few in flight overlap those.
const fetchWorkers = 4

// fetchAll copies in the objects of fetches, fetchWorkers at a time, paced
// by the throttle (which counts objects in order), and returns how many
// failed. The copies are written without a sync each; the caller flushes.
// It stops early when ctx ends.
func (r *Recovery) fetchAll(ctx context.Context, fetches []Fetch, epoch uint32) int {
	var failed atomic.Int32
	var wg sync.WaitGroup
	next := make(chan Fetch)
	for range min(fetchWorkers, len(fetches)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range next {
				if err := r.recoverOne(ctx, f, epoch); err != nil {
					r.log.Warn("recovery: object", "oid", fmt.Sprintf("%016x", f.Oid), "err", err)
					failed.Add(1)
				}
				r.progress.Lock()
				r.progress.finished++
				r.progress.Unlock()
			}
		}()
	}
	for i, f := range fetches {
		if ctx.Err() != nil {
			break
		}
		if i > 0 {
			r.pace(ctx, i)
		}
		next <- f
	}
	close(next)
	wg.Wait()
	return int(failed.Load())
}

// retryLater runs recovery again for epoch after a growing delay (1 s to
// 30 s), unless a newer epoch or Stop came first.
func (r *Recovery) retryLater(epoch uint32, why string) {
	r.runs.Lock()
	d := min(max(2*r.runs.retry, time.Second), 30*time.Second)
	r.runs.retry = d
	r.runs.Unlock()
	r.log.Warn("recovery incomplete; retrying", "epoch", epoch, "why", why, "in", d)
	time.AfterFunc(d, func() {
		var now uint32
		r.cluster.View(func(s *cluster.State) { now = s.Epoch() })
		r.runs.Lock()
		stopped := r.runs.stopped
		r.runs.Unlock()
		r.progress.Lock()
		completed := r.progress.completed
		r.progress.Unlock()
		if !stopped && now == epoch && completed < epoch {
			r.Start()
		}
	})
}

// unstale puts back the copy of sc.Oid that was current in sc.Epoch,
// unless a copy appeared meanwhile. The stale copy stays until the purge,
// for the members that fetch it from here (READ_PEER at sc.Epoch).
func (r *Recovery) unstale(ctx context.Context, sc StaleCopy) {
	r.locks.Lock(sc.Oid)
	defer r.locks.Unlock(sc.Oid)
	if r.store.Exists(sc.Oid) {
		return // written again meanwhile
	}
	b, err := r.store.ReadStale(sc.Oid, sc.Epoch)
	if err == nil {
		err = r.store.Create(ctx, sc.Oid, int64(len(b)), 0, b, true)
	}
	if err != nil {
		r.log.Warn("recovery: restore the only copy", "oid", fmt.Sprintf("%016x", sc.Oid), "err", err)
		return
	}
	r.log.Warn("recovery: no node has a current copy; restored this node's, the newest left", "oid", fmt.Sprintf("%016x", sc.Oid), "epoch", sc.Epoch)
}

// setAside moves this node's copy of oid to the stale area of epoch.
func (r *Recovery) setAside(oid uint64, epoch uint32) {
	r.locks.Lock(oid)
	err := r.store.MoveToStale(oid, epoch)
	r.locks.Unlock(oid)
	if err != nil && !errors.Is(err, proto.ResNoObj) {
		r.log.Warn("recovery: move to stale", "oid", fmt.Sprintf("%016x", oid), "err", err)
	}
}

// cleanupPoll is how long cleanup waits before asking a member again
// whether it has finished recovering the epoch, after the member's answer
// came back without (each answer waits for it, up to recoveredWait on the
// member's side; an error or a member that does not wait comes back at
// once).
const cleanupPoll = 500 * time.Millisecond

// RecoveredWait bounds how long a STAT_RECOVERY with FlagWaitRecovered is
// held before it is answered.
const RecoveredWait = 2 * time.Second

// cleanup waits until every member has finished recovering v's epoch
// (each member answers as soon as it has: peerRecovered), then drops the copies this node no longer holds (plan's Drop) and purges
// the stale area. Invariant: a copy is dropped only once every node that
// should hold the object has had the chance to copy it.
func (r *Recovery) cleanup(ctx context.Context, v View) {
	for _, n := range v.Nodes {
		if n.Same(r.self) || n.NrVnodes == 0 {
			continue
		}
		for !r.peerRecovered(ctx, n, v.Epoch) {
			select {
			case <-ctx.Done():
				return // a newer epoch: its run cleans up
			case <-time.After(cleanupPoll):
			}
		}
	}
	local, err := r.local()
	if err != nil {
		return
	}
	p := plan(v, local, nil, v.Epoch)
	for _, oid := range p.Drop {
		if ctx.Err() != nil {
			return
		}
		r.setAside(oid, v.Epoch-1) // not a target in v.Epoch
	}
	if err := r.store.PurgeStale(v.Epoch); err != nil {
		r.log.Warn("recovery: purge stale", "err", err)
	}
	r.log.Info("recovery cleanup", "epoch", v.Epoch, "dropped", len(p.Drop))
}

// peerRecovered reports whether n says it has finished recovering epoch.
// n holds the answer until it has, up to RecoveredWait.
func (r *Recovery) peerRecovered(ctx context.Context, n proto.Node, epoch uint32) bool {
	req := proto.NewRequest(proto.OpStatRecovery)
	req.Flags = proto.FlagWaitRecovered
	req.SetObj(proto.ObjArgs{TgtEpoch: epoch})
	buf := make([]byte, proto.RecoveryStateSize)
	_, _, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
	var st proto.RecoveryState
	return err == nil && st.Unmarshal(buf) == nil && st.State >= epoch
}
