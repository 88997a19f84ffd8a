package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config wires a Handler to the rest of the sheep.
type Config struct {
	Self    proto.Node
	Store   *store.Store
	Cluster cluster.Driver
	Gateway *gateway.Gateway
	Vdi     *vdi.Service
	Log     *slog.Logger
	Members func() []proto.Node // the nodes currently in the cluster
	// Recovery reports recovery progress; Locks serialise peer writes with
	// the recovery of the same object.
	Recovery *recovery.Recovery
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
	Now      func() time.Time
}

// Handler runs one request. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	killed   atomic.Bool
	stopping atomic.Bool
	ops      map[proto.Opcode]op
	stats    requestStats // STAT's counters (stat.go)
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
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg}
	h.ops = h.table()
	return h
}

func (h *Handler) epoch() uint32 {
	var e uint32
	h.cfg.Cluster.View(func(s *cluster.State) { e = s.Epoch() })
	return e
}

// Handle runs req with its payload and returns the response, the reply
// payload and a function to call once the payload was sent (or nil).
func (h *Handler) Handle(ctx context.Context, req *proto.Request, data []byte, peer string) (proto.Response, []byte, func()) {
	c := &call{req: *req, data: data, peer: peer}
	c.rsp.Result = h.run(ctx, c)
	return c.rsp, c.out, c.release
}

func (h *Handler) run(ctx context.Context, c *call) proto.Result {
	op := c.req.Opcode
	if op.Internal() {
		if c.req.ProtoVer != proto.SheepProtoVer {
			return proto.ResVerMismatch
		}
	} else if c.req.ProtoVer > proto.ProtoVer {
		return proto.ResVerMismatch
	}
	o, ok := h.ops[op]
	if !ok {
		return proto.ResInvalidParms
	}
	if h.killed.Load() {
		return proto.ResKilled
	}
	if h.stopping.Load() {
		return proto.ResShutdown
	}
	var status uint8
	h.cfg.Cluster.View(func(s *cluster.State) { status = s.Status() })
	if status == proto.StatusOK && !o.force && h.waitingForJoin() {
		return proto.ResWaitForJoin
	}
	if (status == proto.StatusWait && !o.force || reportsStatus(op)) && !isPeerOp(op) {
		// The format may have been committed through another node and not
		// reached this one yet: catch up before answering (STAT_CLUSTER
		// and CLUSTER_INFO report the status, so they catch up too).
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := h.cfg.Cluster.Sync(sctx); err == nil {
			h.cfg.Cluster.View(func(s *cluster.State) { status = s.Status() })
		}
		cancel()
		if status == proto.StatusWait && !o.force {
			if rj, ok := h.cfg.Cluster.(interface{ Rejoining() bool }); ok && rj.Rejoining() {
				return proto.ResWaitForJoin
			}
			return proto.ResWaitForFormat
		}
	}
	class := h.stats.begin(&c.req)
	err := o.fn(ctx, c)
	h.stats.end(class)
	res := proto.ResultOf(err)
	if err != nil && res == proto.ResEIO {
		h.cfg.Log.Warn("request failed", "op", fmt.Sprintf("%#x", uint8(op)), "peer", c.peer, "err", err)
	} else if err != nil {
		h.cfg.Log.Debug("request", "op", fmt.Sprintf("%#x", uint8(op)), "peer", c.peer, "result", res.String(), "err", err)
	}
	return res
}

func (h *Handler) table() map[proto.Opcode]op {
	return map[proto.Opcode]op{
		proto.OpCreateAndWriteObj: {fn: h.createAndWrite},
		proto.OpReadObj:           {fn: h.readObj},
		proto.OpWriteObj:          {fn: h.writeObj},
		proto.OpRemoveObj:         {fn: h.removeObj},
		proto.OpDiscardObj:        {fn: h.discardObj},

		// Peer ops are gated by the sender's epoch, not by our status: a
		// node that has not applied the format yet waits for its epoch.
		proto.OpCreateAndWritePeer: {force: true, fn: h.peer(h.createPeer)},
		proto.OpReadPeer:           {force: true, fn: h.peer(h.readPeer)},
		proto.OpWritePeer:          {force: true, fn: h.peer(h.writePeer)},
		proto.OpRemovePeer:         {force: true, fn: h.peer(h.removePeer)},
		proto.OpFlushPeer:          {force: true, fn: h.peer(h.flushPeer)},
		proto.OpPunchPeer:          {force: true, fn: h.peer(h.punchPeer)},
		OpClusterPropose:           {force: true, fn: h.clusterPropose},

		proto.OpNewVdi:            {fn: h.newVdi},
		proto.OpLockVdi:           {fn: h.lockVdi},
		proto.OpReleaseVdi:        {fn: h.releaseVdi},
		proto.OpGetVdiInfo:        {fn: h.getVdiInfo},
		proto.OpReadVdis:          {force: true, fn: h.readVdis},
		proto.OpFlushVdi:          {fn: h.flushVdi},
		proto.OpDelVdi:            {fn: h.delVdi},
		proto.OpGetClusterDefault: {force: true, fn: h.getClusterDefault},
		proto.OpGetVdiAttr:        {fn: h.getVdiAttr},

		proto.OpGetNodeList:    {force: true, fn: h.getNodeList},
		proto.OpMakeFS:         {force: true, fn: h.makeFS},
		proto.OpShutdown:       {force: true, fn: h.shutdown},
		proto.OpStatSheep:      {fn: h.statSheep},
		proto.OpStatCluster:    {force: true, fn: h.statCluster},
		proto.OpGetStoreList:   {force: true, fn: h.getStoreList},
		proto.OpStatRecovery:   {fn: h.statRecovery},
		proto.OpFlushDelCache:  {fn: noop},
		proto.OpDeleteCache:    {fn: noop},
		proto.OpKillNode:       {force: true, fn: h.killNode},
		proto.OpGetObjList:     {fn: h.getObjList},
		proto.OpGetEpoch:       {fn: h.getEpoch},
		proto.OpEnableRecover:  {fn: h.setRecovery(false)},
		proto.OpDisableRecover: {fn: h.setRecovery(true)},
		proto.OpGetVdiCopies:   {force: true, fn: h.getVdiCopies},
		proto.OpGetHash:        {fn: h.getHash},
		proto.OpExist:          {force: true, fn: h.exist},
		proto.OpClusterInfo:    {force: true, fn: h.clusterInfo},
		proto.OpReadDelVdis:    {force: true, fn: h.readDelVdis},
		proto.OpGetRecovery:    {force: true, fn: h.getRecovery},
		proto.OpSetRecovery:    {force: true, fn: h.setRecoveryThrottle},
		proto.OpForceRecover:   {force: true, fn: h.forceRecover},
		proto.OpOidsExist:      {force: true, fn: h.oidsExist},
		proto.OpRepairReplica:  {fn: h.repairReplica},
		proto.OpStat:           {fn: h.stat},
		proto.OpGetLoglevel:    {force: true, fn: h.getLoglevel},
		proto.OpSetLoglevel:    {force: true, fn: h.setLoglevel},
	}
}

func noop(context.Context, *call) error { return nil }

// peer wraps an object handler for the peer opcodes: the sender's epoch
// is checked against ours (§5.4).
func (h *Handler) peer(fn func(context.Context, *call) error) func(context.Context, *call) error {
	return func(ctx context.Context, c *call) error {
		mine := h.epoch()
		// A request from a newer epoch is parked until ours catches up
		// (the entry is on its way through raft).
		for deadline := time.Now().Add(5 * time.Second); c.req.Epoch > mine && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			mine = h.epoch()
		}
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

// needOut checks that the client accepts n reply bytes.
func (c *call) needOut(n int) error {
	if uint32(n) > c.req.DataLength {
		return fmt.Errorf("reply of %d bytes, room for %d: %w", n, c.req.DataLength, proto.ResBufferSmall)
	}
	return nil
}

// clientFlags are the flags of a client's object request as passed to the
// gateway. CACHE is dropped: without an object cache, FLUSH_VDI answers
// INVALID_PARMS and QEMU, which sets CACHE by default, stops flushing, so
// a client's write must be stable when it is acknowledged (DESIGN.md
// "Durability").
func clientFlags(c *call) uint16 { return c.req.Flags &^ proto.FlagCmdCache }

func (h *Handler) createAndWrite(ctx context.Context, c *call) error {
	o := c.req.Obj()
	var cow uint64
	if c.req.Flags&proto.FlagCmdCow != 0 {
		cow = o.CowOid
	}
	err := h.cfg.Gateway.CreateAndWrite(ctx, o.Oid, cow, int64(o.Offset), c.data, clientFlags(c))
	return err
}

func (h *Handler) readObj(ctx context.Context, c *call) error {
	o := c.req.Obj()
	n := int64(c.req.DataLength)
	size := proto.ObjectSize(o.Oid, h.blockShift(o.Oid))
	if int64(o.Offset) > size {
		return fmt.Errorf("read %016x at %d: %w", o.Oid, o.Offset, proto.ResInvalidParms)
	}
	n = min(n, size-int64(o.Offset))
	buf := getBuf(int(n))
	if err := h.cfg.Gateway.ReadObject(ctx, o.Oid, int64(o.Offset), buf); err != nil {
		putBuf(buf)
		return err
	}
	c.out = buf
	c.release = func() { putBuf(buf) }
	return nil
}

func (h *Handler) blockShift(oid uint64) uint8 {
	var shift uint8
	h.cfg.Cluster.View(func(s *cluster.State) {
		shift = s.BlockSizeShift
		if v := s.VdiState(proto.OidToVid(oid)); v != nil && v.BlockSizeShift != 0 {
			shift = v.BlockSizeShift
		}
	})
	return shift
}

func (h *Handler) writeObj(ctx context.Context, c *call) error {
	o := c.req.Obj()
	lo, hi, ok := tableRange(o.Oid, int64(o.Offset), len(c.data))
	if !ok {
		return h.cfg.Gateway.WriteObject(ctx, o.Oid, int64(o.Offset), c.data, clientFlags(c))
	}
	// A write into an inode's data_vdi_id drops the references it
	// overwrites (a discard writes 0, dog zeroes the table before
	// DEL_VDI): note the old owners, write, then reclaim what nobody
	// references any more (PROTOCOL.md §4.7).
	vid := proto.OidToVid(o.Oid)
	before := make([]byte, 4*(hi-lo))
	if err := h.cfg.Gateway.ReadObject(ctx, o.Oid, int64(proto.DataVdiIDOff(lo)), before); err != nil {
		return err
	}
	if h.addsSnapshotRefs(vid, lo, before, int64(o.Offset), c.data) {
		// A snapshot's table never gains references. This is QEMU's index
		// update racing a `dog vdi snapshot`: READONLY makes it reload the
		// inode and resend the update to the new working VDI (QEMU-CLIENT.md
		// §9), instead of the entry landing in the snapshot and missing
		// from the working VDI. Zeroing stays allowed (dog's delete).
		return fmt.Errorf("inode %x is a snapshot's: %w", vid, proto.ResReadonly)
	}
	if err := h.cfg.Gateway.WriteObject(ctx, o.Oid, int64(o.Offset), c.data, clientFlags(c)); err != nil {
		return err
	}
	after := make([]byte, len(before))
	if err := h.cfg.Gateway.ReadObject(ctx, o.Oid, int64(proto.DataVdiIDOff(lo)), after); err != nil {
		return nil // the write is done; reclamation waits for the next chance
	}
	var dropped []vdi.Ref
	for i := uint32(0); i < hi-lo; i++ {
		old, cur := le.Uint32(before[4*i:]), le.Uint32(after[4*i:])
		if old != 0 && old != cur {
			dropped = append(dropped, vdi.Ref{Vid: old, Index: lo + i})
		}
	}
	if len(dropped) > 0 {
		if err := h.cfg.Vdi.Reclaim(ctx, dropped); err != nil {
			h.cfg.Log.Warn("reclaim dropped references", "vid", fmt.Sprintf("%x", vid), "err", err)
		}
	}
	return nil
}

// addsSnapshotRefs reports whether writing data at off into the inode of
// vid, a snapshot, would set a data_vdi_id entry of [lo, lo+len(before)/4)
// to a new nonzero owner. before holds the current entries.
func (h *Handler) addsSnapshotRefs(vid, lo uint32, before []byte, off int64, data []byte) bool {
	snapshot := false
	h.cfg.Cluster.View(func(s *cluster.State) {
		v := s.VdiState(vid)
		snapshot = v != nil && v.Snapshot && !v.Deleted
	})
	if !snapshot {
		return false
	}
	start := int64(proto.DataVdiIDOff(lo))
	after := slices.Clone(before)
	from, to := max(off, start), min(off+int64(len(data)), start+int64(len(after)))
	copy(after[from-start:to-start], data[from-off:to-off])
	for i := 0; i < len(after); i += 4 {
		if cur := le.Uint32(after[i:]); cur != 0 && cur != le.Uint32(before[i:]) {
			return true
		}
	}
	return false
}

// tableRange returns the data_vdi_id indexes [lo, hi) a write of n bytes at
// off into oid touches, if oid is an inode and the write reaches its table.
func tableRange(oid uint64, off int64, n int) (lo, hi uint32, ok bool) {
	end := off + int64(n)
	if !proto.IsVdiObj(oid) || end <= proto.DataVdiIDOffset || off >= proto.GrefOffset {
		return 0, 0, false
	}
	first := max(off, proto.DataVdiIDOffset)
	last := min(end, proto.GrefOffset)
	lo = uint32((first - proto.DataVdiIDOffset) / 4)
	hi = uint32((last - proto.DataVdiIDOffset + 3) / 4)
	return lo, hi, true
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
	if err := h.cfg.Gateway.WriteObject(ctx, proto.VidToVdiOid(vid), int64(proto.DataVdiIDOff(idx)), zero[:], 0); err != nil {
		return err
	}
	if err := h.cfg.Gateway.RemoveObject(ctx, oid); err != nil && !errors.Is(err, proto.ResNoObj) {
		return err
	}
	return nil
}

// Stopping marks the sheep as shutting down: every later request is
// answered SHUTDOWN.
func (h *Handler) Stopping() { h.stopping.Store(true) }

// OpClusterPropose is our internal op (not in Sheepdog) carrying an encoded
// cluster entry from a follower to the raft leader. The reply carries the
// result and, at rsp @24, the log index the entry was applied at.
const OpClusterPropose proto.Opcode = 0xF0

func (h *Handler) clusterPropose(ctx context.Context, c *call) error {
	if h.cfg.Propose == nil {
		return proto.ResNoSupport
	}
	res, idx, err := h.cfg.Propose(ctx, c.data)
	if err != nil {
		return fmt.Errorf("propose: %w: %v", proto.ResClusterError, err)
	}
	le.PutUint64(c.rsp.Arg[4:], idx)
	if res != proto.ResSuccess {
		return res
	}
	return nil
}

var le = binary.LittleEndian

// The peer ops act on this node's store alone (one copy). A write-type
// peer op with CACHE (a gateway's write-back write) is left unsynced, for
// the next FLUSH_PEER.

// peerSync reports whether a peer write must be synced before the reply.
func peerSync(c *call) bool { return c.req.Flags&proto.FlagCmdCache == 0 }

func (h *Handler) objectSize(oid uint64) int64 { return proto.ObjectSize(oid, h.blockShift(oid)) }

func (h *Handler) createPeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	size := h.objectSize(o.Oid)
	if int64(o.Offset)+int64(len(c.data)) > size {
		return fmt.Errorf("create %016x: [%d,+%d) outside %d: %w", o.Oid, o.Offset, len(c.data), size, proto.ResInvalidParms)
	}
	h.cfg.Locks.Lock(o.Oid)
	defer h.cfg.Locks.Unlock(o.Oid)
	if c.req.Flags&proto.FlagCmdExcl != 0 && h.cfg.Store.Exists(o.Oid) {
		return nil // a gateway's fill: a copy made meanwhile stays (gateway.fill)
	}
	return h.cfg.Store.CreateOrWrite(ctx, o.Oid, size, int64(o.Offset), c.data, peerSync(c))
}

func (h *Handler) readPeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	if h.cfg.Recovery != nil && !h.cfg.Recovery.Trusted() {
		return fmt.Errorf("read %016x: copies here are not trusted yet: %w", o.Oid, proto.ResNoObj)
	}
	size := h.objectSize(o.Oid)
	if int64(o.Offset) > size {
		return fmt.Errorf("read %016x at %d: %w", o.Oid, o.Offset, proto.ResInvalidParms)
	}
	n := min(int64(c.req.DataLength), size-int64(o.Offset))
	buf := getBuf(int(n))
	if err := h.cfg.Store.ReadAt(ctx, o.Oid, buf, int64(o.Offset)); err != nil {
		putBuf(buf)
		return err
	}
	c.out = buf
	c.release = func() { putBuf(buf) }
	return nil
}

func (h *Handler) writePeer(ctx context.Context, c *call) error {
	o := c.req.Obj()
	h.cfg.Locks.RLock(o.Oid)
	defer h.cfg.Locks.RUnlock(o.Oid)
	return h.cfg.Store.WriteAt(ctx, o.Oid, c.data, int64(o.Offset), peerSync(c))
}

// flushPeer syncs every object this node changed without sync before the
// request arrived (gateway.Flush).
func (h *Handler) flushPeer(ctx context.Context, _ *call) error {
	return h.cfg.Store.Flush(ctx)
}

func (h *Handler) removePeer(ctx context.Context, c *call) error {
	oid := c.req.Obj().Oid
	h.cfg.Locks.Lock(oid)
	defer h.cfg.Locks.Unlock(oid)
	return h.cfg.Store.Remove(ctx, oid)
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

func isPeerOp(op proto.Opcode) bool {
	return op == proto.OpCreateAndWritePeer || op == proto.OpReadPeer || op == proto.OpWritePeer || op == proto.OpRemovePeer ||
		op == proto.OpFlushPeer || op == proto.OpPunchPeer
}

// waitingForJoin reports a restarted node still waiting for the nodes of
// the last epoch.
func (h *Handler) waitingForJoin() bool {
	w, ok := h.cfg.Cluster.(interface{ WaitingForJoin() bool })
	return ok && w.WaitingForJoin()
}
