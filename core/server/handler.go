package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config wires a Handler to the rest of the sheep.
type Config struct {
	Self    proto.Node
	Store   LocalStore
	Cluster cluster.Driver
	Gateway Objects
	Vdi     VDIs
	Log     *slog.Logger
	Members func() []proto.Node // the nodes currently in the cluster
	// Recovery reports recovery progress (nil: none, as in a test);
	// Locks serialise peer writes with the recovery of the same object.
	Recovery Recovery
	Locks    *store.Locks
	// FixedVnodes is set when the sheep was started with -V: before
	// format, CLUSTER_INFO then does not advertise auto vnodes (dog's
	// format checks the strategy against it).
	FixedVnodes bool
	// Propose applies an encoded cluster entry forwarded by a follower
	// (nil when this sheep cannot lead).
	Propose func(ctx context.Context, entry []byte) (proto.Result, uint64, error)
	// LogLevel is the level of Log, changed at run time by SET_LOGLEVEL
	// (nil: GET/SET_LOGLEVEL answer NO_SUPPORT).
	LogLevel *slog.LevelVar
	// Stop stops this sheep (a cluster shutdown without a leader, see
	// shutdown) without waiting: the reply to the request that asked
	// must still go out. nil: such a shutdown answers NO_SUPPORT.
	Stop func()
	Now  func() time.Time
	// Metrics records client requests (the native front-end) and
	// PeerMetrics requests from other sheeps; nil records nothing.
	Metrics, PeerMetrics *metrics.Frontend
	// PeerAuth: the cluster has a key, and peer-only ops (peerOnly) are
	// taken only from connections that authenticated as peers (TLS with
	// a certificate of the cluster's CA). false: from anyone, as
	// Sheepdog does.
	PeerAuth bool
	// DegradedReads counts the gateway's degraded reads of
	// erasure-coded objects, for STAT (nil: none).
	DegradedReads func() uint64
	// Cache is the object cache (nil: off); Gateway is then the cache
	// over the gateway (cache.go).
	Cache Cache
	// Disks are the node's disks, for MD_INFO/PLUG/UNPLUG (nil: those
	// answer NO_SUPPORT).
	Disks Disks
}

// Handler runs one request. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	killed atomic.Bool
	// throttleMs is the recovery interval last set, in ms as given: one
	// past what a time.Duration holds is reported back as it was set.
	throttleMs atomic.Uint64
	stopping   atomic.Bool
	ops        *[256]op     // by opcode; fn nil: not an op of ours
	stats      requestStats // STAT's counters (stat.go)
	// badClients logs what a client can cause at will (refused
	// proposals, failed requests), at most a line per message every 10 s.
	badClients *netlimit.Sampler
}

// op is a handler with Sheepdog's "force" mark: forced ops run while the
// cluster waits for format or join.
type op struct {
	force bool
	fn    func(ctx context.Context, r *call) error
}

// call is one request being handled.
type call struct {
	req     proto.Request
	data    []byte
	rsp     proto.Response
	out     []byte
	release func()
	peer    string
	// authPeer: the request came on a connection authenticated as a
	// peer sheep of this cluster.
	authPeer bool
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, badClients: netlimit.NewSampler(cfg.Log, 10*time.Second)}
	h.ops = h.table()
	return h
}

func (h *Handler) status() uint8 {
	st := h.cfg.Cluster.ReadState().Status()
	h.cfg.Cluster.ReleaseState()
	return st
}

func (h *Handler) epoch() uint32 {
	e := h.cfg.Cluster.ReadState().Epoch()
	h.cfg.Cluster.ReleaseState()
	return e
}

// Handle runs req with its payload and returns the response, the reply
// payload and a function to call once the payload was sent (or nil).
// authPeer says the connection authenticated as a peer of this cluster.
func (h *Handler) Handle(ctx context.Context, req *proto.Request, data []byte, peer string, authPeer bool) (proto.Response, []byte, func()) {
	c := callPool.Get().(*call)
	*c = call{req: *req, data: data, peer: peer, authPeer: authPeer}
	c.rsp.Result = h.run(ctx, c)
	rsp, out, release := c.rsp, c.out, c.release
	*c = call{}
	callPool.Put(c)
	return rsp, out, release
}

// callPool holds calls between requests: Handle is on every request's
// path. Invariant: an op keeps no reference to its call after it returns
// (none starts a goroutine with it; a release function captures only the
// buffer it gives back).
var callPool = sync.Pool{New: func() any { return new(call) }}

func (h *Handler) run(ctx context.Context, c *call) proto.Result {
	op := c.req.Opcode
	if op.Internal() {
		if c.req.ProtoVer != proto.SheepProtoVer {
			return proto.ResVerMismatch
		}
	} else if c.req.ProtoVer > proto.ProtoVer {
		return proto.ResVerMismatch
	}
	o := &h.ops[op]
	if o.fn == nil {
		return proto.ResInvalidParms
	}
	if h.cfg.PeerAuth && !c.authPeer && peerOnly(op) {
		h.badClients.Warn("peer-only op from a connection that is not an authenticated peer: refused", "op", fmt.Sprintf("%#x", uint8(op)), "peer", c.peer)
		return proto.ResNoSupport
	}
	if h.killed.Load() {
		return proto.ResKilled
	}
	if h.stopping.Load() {
		return proto.ResShutdown
	}
	status := h.status()
	if status == proto.StatusOK && !o.force && h.waitingForJoin() {
		return proto.ResWaitForJoin
	}
	if status == proto.StatusOK && !o.force && !h.awaitMember(ctx) {
		return proto.ResWaitForJoin
	}
	if status == proto.StatusOK && writesObjects(op) {
		if err := cluster.AwaitQuorum(ctx, h.cfg.Cluster); err != nil {
			return proto.ResultOf(err)
		}
	}
	if (status == proto.StatusWait && !o.force || reportsStatus(op)) && !isPeerOp(op) {
		// The format may have been committed through another node and not
		// reached this one yet: catch up before answering (STAT_CLUSTER
		// and CLUSTER_INFO report the status, so they catch up too).
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := h.cfg.Cluster.Sync(sctx); err == nil {
			status = h.status()
		}
		cancel()
		if status == proto.StatusWait && !o.force {
			if m, ok := h.cfg.Cluster.(cluster.Membership); ok && m.Rejoining() {
				return proto.ResWaitForJoin
			}
			return proto.ResWaitForFormat
		}
	}
	class := h.stats.begin(&c.req)
	start := time.Now()
	err := o.fn(ctx, c)
	h.stats.end(class)
	h.observe(class, &c.req, start, err)
	res := proto.ResultOf(err)
	if err != nil && res == proto.ResEIO {
		h.badClients.Warn("request failed", "op", fmt.Sprintf("%#x", uint8(op)), "peer", c.peer, "err", err)
	} else if err != nil {
		h.cfg.Log.Debug("request", "op", fmt.Sprintf("%#x", uint8(op)), "peer", c.peer, "result", res.String(), "err", err)
	}
	return res
}

// table is the ops by opcode. An array, not a map: the lookup is on
// every request (a map's hash and probe were 5% of a replica's CPU under
// 4 KiB writes).
func (h *Handler) table() *[256]op {
	var t [256]op
	for code, o := range map[proto.Opcode]op{
		proto.OpCreateAndWriteObj: {fn: h.createAndWrite},
		proto.OpReadObj:           {fn: h.readObj},
		proto.OpWriteObj:          {fn: h.writeObj},
		proto.OpRemoveObj:         {fn: h.removeObj},
		proto.OpDiscardObj:        {fn: h.discardObj},
		proto.OpDecrefObj:         {fn: h.decrefObj},

		// Peer ops are gated by the sender's epoch, not by our status: a
		// node that has not applied the format yet waits for its epoch.
		proto.OpCreateAndWritePeer: {force: true, fn: h.peer(h.createPeer)},
		proto.OpReadPeer:           {force: true, fn: h.peer(h.readPeer)},
		proto.OpWritePeer:          {force: true, fn: h.peer(h.writePeer)},
		proto.OpRemovePeer:         {force: true, fn: h.peer(h.removePeer)},
		proto.OpFlushPeer:          {force: true, fn: h.peer(h.flushPeer)},
		proto.OpGetStaleList:       {force: true, fn: h.peer(h.getStaleList)},
		proto.OpPunchPeer:          {force: true, fn: h.peer(h.punchPeer)},
		proto.OpDecrefPeer:         {force: true, fn: h.peer(h.decrefPeer)},
		proto.OpClusterPropose:     {force: true, fn: h.clusterPropose},
		proto.OpGetGossipNodes:     {force: true, fn: h.getGossipNodes},
		proto.OpStopNode:           {force: true, fn: h.stopNode},
		proto.OpReweightPeer:       {fn: h.reweightPeer},

		proto.OpNewVdi:            {fn: h.newVdi},
		proto.OpNotifyVdiAdd:      {fn: h.notifyVdiAdd},
		proto.OpLockVdi:           {fn: h.lockVdi},
		proto.OpReleaseVdi:        {fn: h.releaseVdi},
		proto.OpGetVdiInfo:        {fn: h.getVdiInfo},
		proto.OpReadVdis:          {force: true, fn: h.readVdis},
		proto.OpFlushVdi:          {fn: h.flushVdi},
		proto.OpDelVdi:            {fn: h.delVdi},
		proto.OpGetClusterDefault: {force: true, fn: h.getClusterDefault},
		proto.OpGetVdiAttr:        {fn: h.getVdiAttr},

		proto.OpGetNodeList:      {force: true, fn: h.getNodeList},
		proto.OpMakeFS:           {force: true, fn: h.makeFS},
		proto.OpShutdown:         {force: true, fn: h.shutdown},
		proto.OpStatSheep:        {fn: h.statSheep},
		proto.OpStatCluster:      {force: true, fn: h.statCluster},
		proto.OpGetStoreList:     {force: true, fn: h.getStoreList},
		proto.OpStatRecovery:     {fn: h.statRecovery},
		proto.OpFlushDelCache:    {fn: h.flushDelCache},
		proto.OpDeleteCache:      {fn: h.deleteCache},
		proto.OpGetCacheInfo:     {fn: h.getCacheInfo},
		proto.OpCachePurge:       {fn: h.cachePurge},
		proto.OpCacheFlushPeer:   {force: true, fn: h.cacheFlushPeer},
		proto.OpKillNode:         {force: true, fn: h.killNode},
		proto.OpSetVnodes:        {force: true, fn: h.setVnodes},
		proto.OpReweight:         {fn: h.reweight},
		proto.OpAlterClusterCopy: {fn: h.alterClusterCopy},
		proto.OpAlterVdiCopy:     {fn: h.alterVdiCopy},
		proto.OpGetObjList:       {fn: h.getObjList},
		proto.OpGetEpoch:         {fn: h.getEpoch},
		proto.OpEnableRecover:    {fn: h.setRecovery(false)},
		proto.OpDisableRecover:   {fn: h.setRecovery(true)},
		proto.OpGetVdiCopies:     {force: true, fn: h.getVdiCopies},
		proto.OpGetHash:          {fn: h.getHash},
		proto.OpMdInfo:           {fn: h.mdInfo},
		proto.OpMdPlug:           {fn: h.mdPlug(true)},
		proto.OpMdUnplug:         {fn: h.mdPlug(false)},
		proto.OpExist:            {force: true, fn: h.exist},
		proto.OpClusterInfo:      {force: true, fn: h.clusterInfo},
		proto.OpReadDelVdis:      {force: true, fn: h.readDelVdis},
		proto.OpGetRecovery:      {force: true, fn: h.getRecovery},
		proto.OpSetRecovery:      {force: true, fn: h.setRecoveryThrottle},
		proto.OpForceRecover:     {force: true, fn: h.forceRecover},
		proto.OpOidsExist:        {force: true, fn: h.oidsExist},
		proto.OpRepairReplica:    {fn: h.repairReplica},
		proto.OpStat:             {fn: h.stat},
		proto.OpGetLoglevel:      {force: true, fn: h.getLoglevel},
		proto.OpSetLoglevel:      {force: true, fn: h.setLoglevel},
	} {
		t[code] = o
	}
	return &t
}

func noop(context.Context, *call) error { return nil }

// peer wraps an object handler for the peer opcodes: the sender's epoch
// is checked against ours (§5.4).
func (h *Handler) peer(fn func(context.Context, *call) error) func(context.Context, *call) error {
	return func(ctx context.Context, c *call) error {
		// A request from a newer epoch is parked until ours catches up
		// (the entry is on its way through raft).
		if w, ok := h.cfg.Cluster.(cluster.EpochWaiter); ok && c.req.Epoch > h.epoch() {
			wctx, cancel := context.WithTimeout(ctx, epochWait)
			w.WaitEpoch(wctx, c.req.Epoch)
			cancel()
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		mine := h.epoch()
		switch {
		case c.req.Flags&proto.FlagCmdRecovery != 0:
		case c.req.Epoch < mine:
			return proto.ResOldNodeVer
		case c.req.Epoch > mine:
			return proto.ResNewNodeVer
		}
		// Copies about to be moved aside for this epoch are not to be
		// touched; the sender retries NEW_NODE_VER.
		if h.cfg.Recovery != nil && !h.cfg.Recovery.Settle(ctx) {
			return proto.ResNewNodeVer
		}
		return fn(ctx, c)
	}
}

// epochWait bounds how long a peer request from a newer epoch waits for
// this node to catch up.
const epochWait = 5 * time.Second

// needOut checks that the client accepts n reply bytes.
func (c *call) needOut(n int) error {
	if uint32(n) > c.req.DataLength {
		return fmt.Errorf("reply of %d bytes, room for %d: %w", n, c.req.DataLength, proto.ResBufferSmall)
	}
	return nil
}

func (h *Handler) createAndWrite(ctx context.Context, c *call) error {
	o := c.req.Obj()
	if err := h.checkCreate(ctx, o.Oid); err != nil {
		return err
	}
	var cow uint64
	if c.req.Flags&proto.FlagCmdCow != 0 {
		cow = o.CowOid
	}
	err := h.cfg.Gateway.CreateAndWrite(ctx, o.Oid, cow, int64(o.Offset), c.data, h.clientFlags(c))
	return err
}

// checkCreate refuses to create an object for a VDI that does not exist
// (or is deleted), or a data object past the end of its VDI: such objects
// would belong to nobody and outlive every delete.
func (h *Handler) checkCreate(ctx context.Context, oid uint64) error {
	vid := proto.OidToVid(oid)
	live := func() (known, ok bool) {
		h.cfg.Cluster.View(func(s *cluster.State) {
			v := s.VdiState(vid)
			known, ok = v != nil, v != nil && !v.Deleted
		})
		return known, ok
	}
	known, ok := live()
	if !known {
		// Created through another node an instant ago: catch up first.
		if err := h.cfg.Cluster.Sync(ctx); err == nil {
			_, ok = live()
		}
	}
	if !ok {
		return fmt.Errorf("create %016x: vdi %x does not exist: %w", oid, vid, proto.ResNoVdi)
	}
	if !proto.IsDataObj(oid) {
		return nil
	}
	var b [8]byte
	if err := h.cfg.Gateway.ReadObject(ctx, proto.VidToVdiOid(vid), proto.InodeVdiSizeOffset, b[:]); err != nil {
		return fmt.Errorf("create %016x: read the size of vdi %x: %w", oid, vid, err)
	}
	size, objSize := le.Uint64(b[:]), uint64(h.objectSize(oid))
	if idx := uint64(proto.DataIndex(oid)); idx >= (size+objSize-1)/objSize {
		return fmt.Errorf("create %016x: index %d past the end of vdi %x (%d bytes): %w", oid, idx, vid, size, proto.ResInvalidParms)
	}
	return nil
}

func (h *Handler) readObj(ctx context.Context, c *call) error {
	o := c.req.Obj()
	n := int64(c.req.DataLength)
	size := h.objectSize(o.Oid)
	if int64(o.Offset) > size {
		return fmt.Errorf("read %016x at %d: %w", o.Oid, o.Offset, proto.ResInvalidParms)
	}
	n = min(n, size-int64(o.Offset))
	bp := bufpool.Get(int(n))
	buf := *bp
	if err := h.cfg.Gateway.ReadObject(ctx, o.Oid, int64(o.Offset), buf); err != nil {
		bufpool.Put(bp)
		return err
	}
	c.out = buf
	c.release = func() { bufpool.Put(bp) }
	return nil
}

func (h *Handler) writeObj(ctx context.Context, c *call) error {
	o := c.req.Obj()
	if c.req.Flags&proto.FlagCmdCache == 0 && isHeaderWrite(o.Oid, int64(o.Offset)) {
		// A resize or tag through this node: no other node's cache may
		// keep the old header (see "Coherence"). This node's own cache
		// stays current (a write through it).
		if err := h.cacheFlushEverywhere(ctx, proto.OidToVid(o.Oid), false, false); err != nil {
			return err
		}
	}
	if h.cfg.Cache != nil {
		// The cache routes table writes to core/vdi itself, at the push
		// or at once (cmd/sheep's backend).
		return h.cfg.Gateway.WriteObject(ctx, o.Oid, int64(o.Offset), c.data, h.clientFlags(c))
	}
	if _, _, ok := vdi.TableRange(o.Oid, int64(o.Offset), len(c.data)); ok {
		// A write into an inode's data_vdi_id drops the references it
		// overwrites; core/vdi writes it and reclaims what nobody
		// references any more.
		return h.cfg.Vdi.WriteTable(ctx, o.Oid, int64(o.Offset), c.data, h.clientFlags(c))
	}
	return h.cfg.Gateway.WriteObject(ctx, o.Oid, int64(o.Offset), c.data, h.clientFlags(c))
}

func (h *Handler) removeObj(ctx context.Context, c *call) error {
	return h.cfg.Gateway.RemoveObject(ctx, c.req.Obj().Oid)
}

// discardObj is old QEMU's DISCARD_OBJ: clear the index in the owning
// inode, then remove the object.
func (h *Handler) discardObj(ctx context.Context, c *call) error {
	oid := c.req.Obj().Oid
	if !proto.IsDataObj(oid) {
		return fmt.Errorf("discard %016x: %w", oid, proto.ResInvalidParms)
	}
	var zero [4]byte
	vid, idx := proto.OidToVid(oid), proto.DataIndex(oid)
	ino, off := proto.VidToVdiOid(vid), int64(proto.DataVdiIDOff(idx))
	write := h.cfg.Gateway.WriteObject // with a cache: it routes the table write to core/vdi
	if h.cfg.Cache == nil {
		// core/vdi drops the reference the entry held (its ledger, if
		// shared) and resets its gref.
		write = h.cfg.Vdi.WriteTable
	}
	if err := write(ctx, ino, off, zero[:], 0); err != nil {
		return err
	}
	if err := h.cfg.Gateway.RemoveObject(ctx, oid); err != nil && !errors.Is(err, proto.ResNoObj) {
		return err
	}
	return nil
}

// Fail stops this node serving for good (its store failed): every later
// request is answered KILLED, as after KILL_NODE.
func (h *Handler) Fail() { h.killed.Store(true) }

// Stopping marks the sheep as shutting down: every later request is
// answered SHUTDOWN.
func (h *Handler) Stopping() { h.stopping.Store(true) }

var le = binary.LittleEndian

// The peer ops act on this node's store alone (one copy). A write-type
// peer op with CACHE (a gateway's write-back write) is left unsynced, for
// the next FLUSH_PEER.

// peerSync reports whether a peer write must be synced before the reply.
func peerSync(c *call) bool { return c.req.Flags&proto.FlagCmdCache == 0 }

func (h *Handler) objectSize(oid uint64) int64 {
	size := h.cfg.Cluster.ReadState().ObjectSize(oid)
	h.cfg.Cluster.ReleaseState()
	return size
}

func (h *Handler) createPeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	key, size := h.peerKey(o)
	if int64(o.Offset)+int64(len(c.data)) > size {
		return fmt.Errorf("create %s: [%d,+%d) outside %d: %w", proto.ObjectName(key), o.Offset, len(c.data), size, proto.ResInvalidParms)
	}
	h.cfg.Locks.Lock(key)
	defer h.cfg.Locks.Unlock(key)
	if c.req.Flags&proto.FlagCmdExcl != 0 && h.cfg.Store.Exists(key) {
		return nil // a gateway's fill: a copy made meanwhile stays (gateway.fill)
	}
	return h.cfg.Store.CreateOrWrite(ctx, key, size, int64(o.Offset), c.data, peerSync(c))
}

func (h *Handler) readPeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	trusted := h.cfg.Recovery == nil || h.cfg.Recovery.Trusted()
	key, size := h.peerKey(o)
	// Recovery reading an older epoch's copy (obj.tgt_epoch, as
	// Sheepdog's default_read): the live copy when it may be served,
	// else the stale copy that was current in that epoch.
	if c.req.Flags&proto.FlagCmdRecovery != 0 && o.TgtEpoch != 0 && o.TgtEpoch < h.epoch() &&
		(!trusted || !h.cfg.Store.Exists(key)) {
		return h.readStale(c, key, o)
	}
	if !trusted {
		return fmt.Errorf("read %016x: copies here are not trusted yet: %w", o.Oid, proto.ResNoObj)
	}
	if int64(o.Offset) > size {
		return fmt.Errorf("read %s at %d: %w", proto.ObjectName(key), o.Offset, proto.ResInvalidParms)
	}
	n := min(int64(c.req.DataLength), size-int64(o.Offset))
	bp := bufpool.Get(int(n))
	buf := *bp
	if err := h.cfg.Store.ReadAt(ctx, key, buf, int64(o.Offset)); err != nil {
		bufpool.Put(bp)
		return err
	}
	c.out = buf
	c.release = func() { bufpool.Put(bp) }
	return nil
}

// readStale answers a READ_PEER from the stale copy of key that was
// current in o.TgtEpoch (verified against its checksums).
func (h *Handler) readStale(c *call, key uint64, o proto.ObjArgs) error {
	data, err := h.cfg.Store.ReadStale(key, o.TgtEpoch)
	if err != nil {
		return err
	}
	if int(o.Offset) > len(data) {
		return fmt.Errorf("read stale %s at %d: %w", proto.ObjectName(key), o.Offset, proto.ResInvalidParms)
	}
	n := min(int(c.req.DataLength), len(data)-int(o.Offset))
	c.out = data[o.Offset : int(o.Offset)+n]
	return nil
}

// getStaleList is OpGetStaleList: the copies in this node's stale area,
// once its copies are settled for the epoch (peer waits for that).
func (h *Handler) getStaleList(_ context.Context, c *call) error {
	objs, err := h.cfg.Store.ListStale()
	if err != nil {
		return err
	}
	if err := c.needOut(proto.StaleEntrySize * len(objs)); err != nil {
		return err
	}
	out := make([]byte, 0, proto.StaleEntrySize*len(objs))
	for _, o := range objs {
		out = proto.AppendStaleEntry(out, proto.StaleEntry{Key: o.Oid, Epoch: o.Epoch})
	}
	c.out = out
	return nil
}

func (h *Handler) writePeer(ctx context.Context, c *call) error {
	key, _ := h.peerKey(c.req.Obj())
	h.cfg.Locks.RLock(key)
	defer h.cfg.Locks.RUnlock(key)
	return h.cfg.Store.WriteAt(ctx, key, c.data, int64(c.req.Obj().Offset), peerSync(c))
}

// flushPeer syncs every object this node changed without sync before the
// request arrived (gateway.Flush).
func (h *Handler) flushPeer(ctx context.Context, _ *call) error {
	return h.cfg.Store.Flush(ctx)
}

func (h *Handler) removePeer(ctx context.Context, c *call) error {
	key, _ := h.peerKey(c.req.Obj())
	h.cfg.Locks.Lock(key)
	defer h.cfg.Locks.Unlock(key)
	return h.cfg.Store.Remove(ctx, key)
}

// reportsStatus lists the ops that answer from the cluster state directly:
// they catch up with the leader first, so that what was acknowledged
// through any node is visible through every node.
func reportsStatus(op proto.Opcode) bool {
	switch op {
	case proto.OpStatCluster, proto.OpClusterInfo, proto.OpReadVdis, proto.OpReadDelVdis, proto.OpGetVdiCopies,
		// qemu-img create takes the object size from it; zeros from a
		// node that has not applied the format yet fail the create.
		proto.OpGetClusterDefault:
		return true
	}
	return false
}

// peerOnly lists the ops only sheeps send each other: the peer object
// ops, raft proposals, a leaderless shutdown's STOP_NODE, and the object
// lists and repairs recovery asks for. With a cluster key, only
// authenticated peers may send them.
func peerOnly(op proto.Opcode) bool {
	switch op {
	case proto.OpClusterPropose, proto.OpStopNode, proto.OpGetObjList, proto.OpRepairReplica, proto.OpCacheFlushPeer,
		proto.OpReweightPeer, proto.OpGetStaleList:
		return true
	}
	return isPeerOp(op)
}

func isPeerOp(op proto.Opcode) bool {
	return op == proto.OpCreateAndWritePeer || op == proto.OpReadPeer || op == proto.OpWritePeer || op == proto.OpRemovePeer ||
		op == proto.OpFlushPeer || op == proto.OpPunchPeer
}

// waitingForJoin reports a restarted node still waiting for the nodes of
// the last epoch.
func (h *Handler) waitingForJoin() bool {
	m, ok := h.cfg.Cluster.(cluster.Membership)
	return ok && m.WaitingForJoin()
}

// outside reports a node the current epoch leaves out (cluster.Membership).
func (h *Handler) outside() bool {
	m, ok := h.cfg.Cluster.(cluster.Membership)
	return ok && m.Outside()
}

// memberWait bounds how long a client request to a node the current epoch
// leaves out waits for the epoch that takes it (back) in.
const memberWait = 10 * time.Second

// awaitMember returns true at once for a member. A node outside the
// current epoch (declared dead while cut off, or a joiner not yet taken
// in) holds what it serves as of a membership that is gone: a request
// waits up to memberWait for the node to be taken in, and is refused
// (false) if it is not: WAIT_FOR_JOIN, which clients may retry, rather
// than stale data or a failed cluster operation.
func (h *Handler) awaitMember(ctx context.Context) bool {
	m, ok := h.cfg.Cluster.(cluster.Membership)
	if !ok || !m.Outside() {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, memberWait)
	defer cancel()
	return m.WaitMember(wctx) == nil
}

// clientIO lists the ops a VM's block driver sends on its I/O connection.
func clientIO(op proto.Opcode) bool { return op == proto.OpReadObj || writesObjects(op) }

// writesObjects lists the client ops that change objects.
func writesObjects(op proto.Opcode) bool {
	switch op {
	case proto.OpCreateAndWriteObj, proto.OpWriteObj, proto.OpRemoveObj, proto.OpDiscardObj:
		return true
	}
	return false
}
