package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/core/vdi"
)

// vdiName decodes the name (and tag) payload of NEW_VDI, GET_VDI_INFO,
// LOCK_VDI and DEL_VDI.
func (c *call) vdiName() (name, tag string, err error) {
	if c.req.Flags&proto.FlagCmdWrite == 0 {
		return "", "", fmt.Errorf("no VDI name sent: %w", proto.ResInvalidParms)
	}
	return proto.ParseVdiName(c.data)
}

func (c *call) setVdiInfo(i vdi.Info) {
	c.rsp.SetVdi(proto.VdiRsp{VdiID: i.Vid, Copies: i.Copies, BlockSizeShift: i.BlockSizeShift})
}

func (h *Handler) newVdi(ctx context.Context, c *call) error {
	if len(c.data) != proto.MaxVdiLen {
		return fmt.Errorf("NEW_VDI payload of %d bytes: %w", len(c.data), proto.ResInvalidParms)
	}
	name, _, err := c.vdiName()
	if err != nil {
		return err
	}
	a := c.req.Vdi()
	if a.BaseVdiID != 0 {
		// A snapshot or clone holds what the guest wrote (see "Coherence").
		if err := h.cacheFlushEverywhere(ctx, a.BaseVdiID, false, true); err != nil {
			return err
		}
	}
	info, err := h.cfg.Vdi.New(ctx, vdi.NewParams{
		Name: name, Size: a.VdiSize, BaseVid: a.BaseVdiID, Copies: a.Copies, CopyPolicy: a.CopyPolicy,
		StorePolicy: a.StorePolicy, BlockSizeShift: a.BlockSizeShift, SnapID: a.SnapID,
	})
	if err != nil {
		return err
	}
	c.setVdiInfo(info)
	return nil
}

// notifyVdiAdd is NOTIFY_VDI_ADD as dog sends it to load a cluster
// snapshot (set_bitmap): vid new_vid is registered in use with the copies,
// policy and block size given, before its objects are written. A vid in
// use already is left as it is, as Sheepdog's add_vdi_state updates an
// existing entry.
func (h *Handler) notifyVdiAdd(ctx context.Context, c *call) error {
	a := c.req.VdiState()
	if a.SetBitmap == 0 {
		return fmt.Errorf("NOTIFY_VDI_ADD without set_bitmap: %w", proto.ResNoSupport)
	}
	if a.NewVid == 0 || a.NewVid >= proto.NrVdis || a.Copies > proto.MaxCopies ||
		(a.BlockSizeShift != 0 && (a.BlockSizeShift < proto.MinBlockSizeShift || a.BlockSizeShift > proto.MaxBlockSizeShift)) {
		return fmt.Errorf("NOTIFY_VDI_ADD of vid %x, %d copies, shift %d: %w", a.NewVid, a.Copies, a.BlockSizeShift, proto.ResInvalidParms)
	}
	res, err := h.cfg.Cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindAddVdi, Vid: a.NewVid,
		Copies: a.Copies, CopyPolicy: a.CopyPolicy, BlockSizeShift: a.BlockSizeShift})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess && res != proto.ResVdiExist {
		return res
	}
	return nil
}

func (h *Handler) getVdiInfo(ctx context.Context, c *call) error {
	name, tag, err := c.vdiName()
	if err != nil {
		return err
	}
	info, err := h.cfg.Vdi.Lookup(ctx, name, tag, c.req.Vdi().SnapID)
	if err != nil {
		return err
	}
	c.setVdiInfo(info)
	return nil
}

func (h *Handler) lockVdi(ctx context.Context, c *call) error {
	if err := h.getVdiInfo(ctx, c); err != nil {
		return err
	}
	return h.cfg.Vdi.Lock(ctx, c.rsp.Vdi().VdiID, h.cfg.Self.NodeID)
}

func (h *Handler) releaseVdi(ctx context.Context, c *call) error {
	return h.cfg.Vdi.Release(ctx, c.req.Vdi().BaseVdiID)
}

func (h *Handler) delVdi(ctx context.Context, c *call) error {
	name, tag, err := c.vdiName()
	if err != nil {
		return err
	}
	// No cache may push into a deleted VDI (see "Coherence").
	if info, err := h.cfg.Vdi.Lookup(ctx, name, tag, c.req.Vdi().SnapID); err == nil {
		if err := h.cacheFlushEverywhere(ctx, info.Vid, false, true); err != nil {
			return err
		}
	}
	vid, err := h.cfg.Vdi.Delete(ctx, name, tag, c.req.Vdi().SnapID)
	if err != nil {
		return err
	}
	c.rsp.SetVdi(proto.VdiRsp{VdiID: vid})
	return nil
}

func (h *Handler) bitmap(c *call, get func(*cluster.State) []byte) error {
	const n = proto.NrVdis / 8
	if err := c.needOut(n); err != nil {
		return err
	}
	h.cfg.Cluster.View(func(s *cluster.State) { c.out = get(s) })
	return nil
}

func (h *Handler) readVdis(_ context.Context, c *call) error {
	return h.bitmap(c, (*cluster.State).InUseBitmap)
}

func (h *Handler) readDelVdis(_ context.Context, c *call) error {
	return h.bitmap(c, (*cluster.State).DeletedBitmap)
}

func (h *Handler) getClusterDefault(_ context.Context, c *call) error {
	h.cfg.Cluster.View(func(s *cluster.State) {
		c.rsp.SetClusterDefault(proto.ClusterDefaultRsp{NrCopies: s.NrCopies, CopyPolicy: s.CopyPolicy, BlockSizeShift: s.BlockSizeShift})
	})
	return nil
}

func (h *Handler) members() []proto.Node {
	nodes := slices.Clone(h.cfg.Members())
	slices.SortFunc(nodes, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	return nodes
}

// getNodeList lists the membership the cluster decided: the current
// epoch's nodes (before format, nothing is decided: the live nodes, which a
// format would take, with automatic vnodes unless this sheep was started
// with -V: Sheepdog's unformatted cluster weighs its nodes by space).
// Failure detection's own view is GET_GOSSIP_NODES.
func (h *Handler) getNodeList(_ context.Context, c *call) error {
	var nodes []proto.Node
	h.cfg.Cluster.View(func(s *cluster.State) { nodes = slices.Clone(s.Nodes()) })
	if len(nodes) == 0 || h.waitingForJoin() {
		// Before the cluster runs (not formatted, or waiting for the
		// nodes of its last epoch after a restart), the nodes that have
		// joined so far, as Sheepdog's node list during its wait.
		nodes = h.members()
		if !h.cfg.FixedVnodes {
			nodes = placement.AutoVnodes(nodes)
		}
	}
	return h.nodeList(c, nodes)
}

// getGossipNodes lists the nodes failure detection sees alive now.
func (h *Handler) getGossipNodes(_ context.Context, c *call) error {
	return h.nodeList(c, h.members())
}

func (h *Handler) nodeList(c *call, nodes []proto.Node) error {
	if err := c.needOut(len(nodes) * proto.NodeSize); err != nil {
		return err
	}
	c.out = proto.MarshalNodes(nodes)
	c.rsp.SetNode(proto.NodeRsp{NrNodes: uint32(len(nodes))})
	return nil
}

func (h *Handler) makeFS(ctx context.Context, c *call) error {
	a := c.req.Cluster()
	storeName := "plain"
	if c.req.Flags&proto.FlagCmdWrite != 0 && len(c.data) > 0 {
		if i := slices.Index(c.data, 0); i >= 0 {
			storeName = string(c.data[:i])
		} else {
			storeName = string(c.data)
		}
	}
	if storeName != "plain" && storeName != "tree" {
		return fmt.Errorf("store %q: %w", storeName, proto.ResNoStore)
	}
	copies := a.Copies
	if copies == 0 {
		copies = proto.DefaultCopies
	}
	if copies > proto.MaxCopies {
		return fmt.Errorf("copies %d: %w", copies, proto.ResInvalidParms)
	}
	if pol := erasure.Policy(a.CopyPolicy); pol.Erasure() {
		if !pol.Valid() {
			return fmt.Errorf("copy policy %#x: %w", a.CopyPolicy, proto.ResInvalidParms)
		}
		copies = uint8(pol.Total()) // nr_copies of an erasure code is d+p
	}
	shift := a.BlockSizeShift
	if shift == 0 {
		shift = proto.DefaultBlockSizeShift
	}
	if shift < proto.MinBlockSizeShift || shift > proto.MaxBlockSizeShift {
		return fmt.Errorf("block size shift %d: %w", shift, proto.ResInvalidParms)
	}
	ctime := a.Ctime
	if ctime == 0 {
		ctime = proto.SheepTime(h.cfg.Now())
	}
	// Every node wipes the objects of an earlier cluster when it applies
	// the format entry (see the driver's OnApply in cmd/sheep).
	nodes := h.members()
	if a.Flags&proto.ClusterFlagAutoVnodes != 0 {
		nodes = placement.AutoVnodes(nodes)
	}
	res, err := h.cfg.Cluster.Propose(ctx, &cluster.Entry{
		Kind: cluster.KindFormat, Ctime: ctime, Time: cluster.UnixNano(h.cfg.Now()), Copies: copies,
		CopyPolicy: a.CopyPolicy, Flags: a.Flags, BlockSizeShift: shift, Store: storeName, Nodes: nodes,
	})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return res
	}
	h.cfg.Log.Info("cluster formatted", "copies", copies, "store", storeName, "block_size_shift", shift)
	return nil
}

// shutdownPropose bounds the wait for a SHUTDOWN entry to be ordered
// before shutdown falls back to stopping the nodes one by one.
const shutdownPropose = 5 * time.Second

// shutdown stops the whole cluster. Ordered through the cluster log, every
// node stops when it applies the entry (the driver's OnApply), and none
// of the departures becomes an epoch. Without a leader (no quorum) no
// epoch can be committed anyway: the nodes this one sees are told to
// stop directly (STOP_NODE), then this one stops.
func (h *Handler) shutdown(ctx context.Context, c *call) error {
	m, replicated := h.cfg.Cluster.(cluster.Membership)
	if replicated && !m.Quorum() {
		return h.stopAll(ctx, m)
	}
	pctx, cancel := context.WithTimeout(ctx, shutdownPropose)
	res, err := h.cfg.Cluster.Propose(pctx, &cluster.Entry{Kind: cluster.KindShutdown, Time: cluster.UnixNano(h.cfg.Now())})
	cancel()
	if err != nil && replicated && ctx.Err() == nil {
		return h.stopAll(ctx, m)
	}
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return res
	}
	return nil
}

func (h *Handler) statSheep(_ context.Context, c *call) error {
	size, free, err := h.capacity()
	if err != nil {
		return err
	}
	c.rsp.SetNode(proto.NodeRsp{StoreSize: size, StoreFree: free})
	return nil
}

// capacity is this node's store size (objects + free space) and free space.
func (h *Handler) capacity() (size, free uint64, err error) {
	_, avail, err := h.cfg.Store.Capacity()
	if err != nil {
		return 0, 0, err
	}
	used, err := h.cfg.Store.Used()
	if err != nil {
		return 0, 0, err
	}
	return used + avail, avail, nil
}

// electionWait is how long STAT_CLUSTER waits for a leader before it
// reports the cluster halted.
const electionWait = 3 * time.Second

// statCluster returns the epoch log newest first, each record 48 + N*80
// bytes for the N the client asked for; the cluster-wide fields are filled
// in the first record only, as sheep does. The result is the cluster
// status.
func (h *Handler) statCluster(ctx context.Context, c *call) error {
	nodesNr := int(c.req.Cluster().NodesNr)
	if nodesNr > proto.MaxNodes {
		return fmt.Errorf("nodes_nr %d: %w", nodesNr, proto.ResInvalidParms)
	}
	rec := proto.EpochLogHeaderSize + nodesNr*proto.NodeSize
	var status proto.Result
	var out []byte
	var small bool
	h.cfg.Cluster.View(func(s *cluster.State) {
		switch s.Status() {
		case proto.StatusWait:
			status = proto.ResWaitForFormat
			return
		case proto.StatusShutdown:
			status = proto.ResShutdown
		}
		max := int(c.req.DataLength) / rec
		for i := 0; i < max && i < len(s.Epochs); i++ {
			e := s.Epochs[len(s.Epochs)-1-i]
			b := make([]byte, rec)
			l := proto.EpochLog{Epoch: e.Epoch}
			if i == 0 {
				l.Ctime, l.NrCopies, l.CopyPolicy, l.Flags, l.DrvName = s.Ctime, s.NrCopies, s.CopyPolicy, s.Flags, s.Store
				if s.DisableRecovery {
					l.DisableRecovery = 1
				}
			}
			var n uint32
			if nodesNr > 0 {
				if len(e.Nodes) > nodesNr {
					small = true
					return
				}
				l.Time = uint64(e.Time)
				n = uint32(len(e.Nodes))
				for j := range e.Nodes {
					e.Nodes[j].Marshal(b[proto.EpochLogHeaderSize+j*proto.NodeSize:])
				}
			}
			l.MarshalHeader(b, n)
			out = append(out, b...)
		}
	})
	if small {
		return proto.ResBufferSmall
	}
	c.out = out
	if status == proto.ResSuccess && (h.waitingForJoin() || h.outside()) {
		return proto.ResWaitForJoin
	}
	if m, ok := h.cfg.Cluster.(cluster.Membership); ok && status == proto.ResSuccess && !m.Quorum() {
		// Cut off from the majority (or the majority is gone): reads of
		// the copies here go on, writes and cluster operations halt.
		// An election (a leader starved of CPU for a heartbeat) takes
		// a second or two and halts nothing: wait that long first.
		wctx, cancel := context.WithTimeout(ctx, electionWait)
		err := m.WaitQuorum(wctx)
		cancel()
		if err != nil {
			return proto.ResHalt
		}
	}
	return status
}

func (h *Handler) clusterInfo(_ context.Context, c *call) error {
	if err := c.needOut(proto.ClusterInfoSize); err != nil {
		return err
	}
	h.cfg.Cluster.View(func(s *cluster.State) {
		ci := proto.ClusterInfo{ProtoVer: proto.SheepProtoVer, Epoch: s.Epoch(), Ctime: s.Ctime, Flags: s.Flags,
			NrCopies: s.NrCopies, CopyPolicy: s.CopyPolicy, Status: s.Status(), BlockSizeShift: s.BlockSizeShift,
			DefaultStore: s.Store, Nodes: s.Nodes()}
		if s.DisableRecovery {
			ci.DisableRecovery = 1
		}
		if !s.Formatted() && !h.cfg.FixedVnodes {
			ci.Flags |= proto.ClusterFlagAutoVnodes
		}
		c.out = ci.Marshal()
	})
	return nil
}

func (h *Handler) getStoreList(_ context.Context, c *call) error {
	c.out = []byte("tree plain\x00") // Sheepdog 1.0 lists them so (test 101)
	return nil
}

func (h *Handler) statRecovery(ctx context.Context, c *call) error {
	st := proto.RecoveryState{}
	if h.cfg.Recovery != nil {
		if e := c.req.Obj().TgtEpoch; c.req.Flags&proto.FlagWaitRecovered != 0 && e != 0 {
			wctx, cancel := context.WithTimeout(ctx, recovery.RecoveredWait)
			h.cfg.Recovery.WaitRecovered(wctx, e)
			cancel()
		}
		st = h.cfg.Recovery.State()
	}
	c.out = st.Marshal()
	return nil
}

// stopAll is a cluster shutdown without a leader: STOP_NODE to every
// other node gossip sees, then this node stops.
func (h *Handler) stopAll(ctx context.Context, m cluster.Membership) error {
	if h.cfg.Stop == nil {
		return proto.ResNoSupport
	}
	h.cfg.Log.Warn("cluster shutdown without a leader: stopping every node directly")
	for _, n := range m.Members() {
		if n.Addr == h.cfg.Self.Addr && n.Port == h.cfg.Self.Port {
			continue
		}
		req := proto.NewRequest(proto.OpStopNode)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, _, err := h.cfg.Gateway.Peers().Call(cctx, n.NodeID.String(), &req, nil, nil); err != nil {
			h.cfg.Log.Warn("cluster shutdown: stop node", "node", n.NodeID.String(), "err", err)
		}
		cancel()
	}
	h.Stopping()
	h.cfg.Stop()
	return nil
}

// stopNode is STOP_NODE: this sheep stops (a cluster shutdown without a
// leader, sent by the node that was asked).
func (h *Handler) stopNode(_ context.Context, c *call) error {
	if h.cfg.Stop == nil {
		return proto.ResNoSupport
	}
	h.cfg.Log.Info("cluster shutdown (without a leader): stopping", "asked_by", c.peer)
	// This reply is made already; later requests get SHUTDOWN, and Stop
	// lets the reply go out before the sheep exits.
	h.Stopping()
	h.cfg.Stop()
	return nil
}

// killNode stops this node serving, takes it out of the cluster (the
// others commit an epoch without it) and ends the process (Config.Stop).
func (h *Handler) killNode(context.Context, *call) error {
	h.killed.Store(true)
	h.cfg.Log.Warn("node killed by request; it leaves the cluster and stops")
	if m, ok := h.cfg.Cluster.(cluster.Membership); ok {
		go m.Leave()
	}
	// As Sheepdog's KILL_NODE, the process ends (Stop lets this reply go
	// out first); without Stop it only stops serving.
	if h.cfg.Stop != nil {
		h.cfg.Stop()
	}
	return nil
}

func (h *Handler) getObjList(_ context.Context, c *call) error {
	if h.cfg.Recovery != nil && !h.cfg.Recovery.Trusted() {
		return nil // nothing here may be copied yet
	}
	oids, err := h.cfg.Store.List()
	if err != nil {
		return err
	}
	if err := c.needOut(8 * len(oids)); err != nil {
		return err
	}
	// Strips are listed by their object's id, once, as sheep lists them.
	out := make([]byte, 0, 8*len(oids))
	var strips map[uint64]bool
	for _, key := range oids {
		o, _, strip := proto.SplitKey(key)
		if strip {
			if strips[o] {
				continue
			}
			if strips == nil {
				strips = map[uint64]bool{}
			}
			strips[o] = true
		}
		out = binary.LittleEndian.AppendUint64(out, o)
	}
	c.out = out
	return nil
}

func (h *Handler) getEpoch(_ context.Context, c *call) error {
	e := c.req.Obj().TgtEpoch
	var rec *cluster.EpochRecord
	h.cfg.Cluster.View(func(s *cluster.State) {
		if e >= 1 && int(e) <= len(s.Epochs) {
			r := s.Epochs[e-1]
			rec = &r
		}
	})
	if rec == nil {
		return fmt.Errorf("epoch %d: %w", e, proto.ResNoTag)
	}
	out := append(proto.MarshalNodes(rec.Nodes), make([]byte, 8)...)
	binary.LittleEndian.PutUint64(out[len(out)-8:], uint64(rec.Time))
	if err := c.needOut(len(out)); err != nil {
		return err
	}
	c.out = out
	return nil
}

func (h *Handler) setRecovery(disable bool) func(context.Context, *call) error {
	return func(ctx context.Context, c *call) error {
		res, err := h.cfg.Cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindRecovery, DisableRecovery: disable})
		if err != nil {
			return err
		}
		if res != proto.ResSuccess {
			return res
		}
		return nil
	}
}

func (h *Handler) getVdiCopies(_ context.Context, c *call) error {
	var out []byte
	h.cfg.Cluster.View(func(s *cluster.State) {
		vids := s.SortedVids()
		out = make([]byte, len(vids)*proto.VdiStateSize)
		for i, v := range vids {
			s.VdiState(v).Marshal(out[i*proto.VdiStateSize:])
		}
	})
	if err := c.needOut(len(out)); err != nil {
		return err
	}
	c.out = out
	return nil
}

func (h *Handler) getHash(_ context.Context, c *call) error {
	d, err := h.cfg.Store.SHA1(c.req.Obj().Oid)
	if err != nil {
		return err
	}
	c.rsp.SetHash(d)
	return nil
}

func (h *Handler) exist(_ context.Context, c *call) error {
	if !h.hasObject(c.req.Obj().Oid) {
		return proto.ResNoObj
	}
	return nil
}

// oidsExist answers with the oids of the payload this node lacks.
func (h *Handler) oidsExist(_ context.Context, c *call) error {
	var missing []byte
	for i := 0; i+8 <= len(c.data); i += 8 {
		oid := binary.LittleEndian.Uint64(c.data[i:])
		if !h.hasObject(oid) {
			missing = binary.LittleEndian.AppendUint64(missing, oid)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	c.out = missing
	return proto.ResNoObj
}
