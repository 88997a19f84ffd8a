package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// This file holds the node's own diagnostics: STAT (the request counters
// of `dog node stat`) and GET/SET_LOGLEVEL (`dog node log level`).

// requestStats are the counters of struct sd_stat, kept as Sheepdog's
// stat_request_begin/end keep them (sheep/request.c), for the requests
// that passed the gating and reached their op. Every update is one atomic
// add: the data path takes no lock for them, and a STAT reply is a
// snapshot of independent counters, not of one instant.
type requestStats struct {
	gwayActive, peerActive                     atomic.Uint64
	gwayTotal, peerTotal                       atomic.Uint64
	gwayRx, gwayTx, peerRx, peerTx             atomic.Uint64
	gwayRemove, gwayRead, gwayWrite, gwayFlush atomic.Uint64
	peerRemove, peerRead, peerWrite            atomic.Uint64
}

// statClass is how a request counts: as a client (gateway) request, a
// peer request, or not at all.
type statClass uint8

const (
	statNone statClass = iota
	statGateway
	statPeer
)

func classify(op proto.Opcode) statClass {
	switch {
	case isPeerOp(op):
		return statPeer
	case op == proto.OpCreateAndWriteObj, op == proto.OpReadObj, op == proto.OpWriteObj,
		op == proto.OpRemoveObj, op == proto.OpDiscardObj, op == proto.OpFlushVdi:
		return statGateway
	}
	return statNone
}

// begin counts req as started and returns its class, to hand to end.
//
// As in Sheepdog, the bytes are data_length: the payload of a WRITE-flagged
// request (rx), the asked-for length of the others (tx), counted before
// the op runs, failed or not; FLUSH_VDI counts as a client request but
// moves no bytes. Unlike Sheepdog, whose remove counter names DISCARD_OBJ
// (a local op there, so it never moves), REMOVE_OBJ and DISCARD_OBJ both
// count as client removes.
func (st *requestStats) begin(req *proto.Request) statClass {
	class := classify(req.Opcode)
	switch class {
	case statPeer:
		st.peerTotal.Add(1)
		st.peerActive.Add(1)
		if req.Flags&proto.FlagCmdWrite != 0 {
			st.peerRx.Add(uint64(req.DataLength))
		} else {
			st.peerTx.Add(uint64(req.DataLength))
		}
		switch req.Opcode {
		case proto.OpReadPeer:
			st.peerRead.Add(1)
		case proto.OpWritePeer, proto.OpCreateAndWritePeer:
			st.peerWrite.Add(1)
		case proto.OpRemovePeer:
			st.peerRemove.Add(1)
		}
	case statGateway:
		st.gwayTotal.Add(1)
		st.gwayActive.Add(1)
		if req.Opcode == proto.OpFlushVdi {
			st.gwayFlush.Add(1)
			break
		}
		if req.Flags&proto.FlagCmdWrite != 0 {
			st.gwayRx.Add(uint64(req.DataLength))
		} else {
			st.gwayTx.Add(uint64(req.DataLength))
		}
		switch req.Opcode {
		case proto.OpReadObj:
			st.gwayRead.Add(1)
		case proto.OpWriteObj, proto.OpCreateAndWriteObj:
			st.gwayWrite.Add(1)
		case proto.OpRemoveObj, proto.OpDiscardObj:
			st.gwayRemove.Add(1)
		}
	}
	return class
}

// end counts a request of class as finished.
func (st *requestStats) end(class statClass) {
	switch class {
	case statPeer:
		st.peerActive.Add(^uint64(0))
	case statGateway:
		st.gwayActive.Add(^uint64(0))
	}
}

// snapshot reads every counter.
func (st *requestStats) snapshot() proto.Stat {
	return proto.Stat{
		GwayActive: st.gwayActive.Load(), PeerActive: st.peerActive.Load(),
		GwayTotal: st.gwayTotal.Load(), PeerTotal: st.peerTotal.Load(),
		GwayRx: st.gwayRx.Load(), GwayTx: st.gwayTx.Load(),
		PeerRx: st.peerRx.Load(), PeerTx: st.peerTx.Load(),
		GwayRemove: st.gwayRemove.Load(), GwayRead: st.gwayRead.Load(),
		GwayWrite: st.gwayWrite.Load(), GwayFlush: st.gwayFlush.Load(),
		PeerRemove: st.peerRemove.Load(), PeerRead: st.peerRead.Load(),
		PeerWrite: st.peerWrite.Load(),
	}
}

// stat is STAT: this sheep's counters as struct sd_stat, followed by
// proto.StatExt (cut off, with the rest of a reply, at data_length:
// dog asks for sd_stat alone).
func (h *Handler) stat(_ context.Context, c *call) error {
	st := h.stats.snapshot()
	var ext proto.StatExt
	if h.cfg.DegradedReads != nil {
		ext.DegradedReads = h.cfg.DegradedReads()
	}
	c.out = append(st.Marshal(), ext.Marshal()...)
	return nil
}

// Sheepdog log levels are syslog's: 0 emerg .. 7 debug.
const (
	sdLogErr     = 3
	sdLogWarning = 4
	sdLogInfo    = 6
	sdLogDebug   = 7
)

// slogLevel maps a Sheepdog log level to the slog level that lets through
// what Sheepdog would log at it: emerg, alert, crit and err show errors
// only, warning adds warnings, notice and info add info, debug shows all.
// ok is false outside 0..7.
func slogLevel(sd int32) (l slog.Level, ok bool) {
	switch {
	case sd < 0 || sd > sdLogDebug:
		return 0, false
	case sd <= sdLogErr:
		return slog.LevelError, true
	case sd == sdLogWarning:
		return slog.LevelWarn, true
	case sd < sdLogDebug:
		return slog.LevelInfo, true
	}
	return slog.LevelDebug, true
}

// sheepdogLevel is the Sheepdog level reported for slog level l: the
// most verbose one that logs the same (so a set of emerg reads back as
// err, and notice as info).
func sheepdogLevel(l slog.Level) int32 {
	switch {
	case l >= slog.LevelError:
		return sdLogErr
	case l >= slog.LevelWarn:
		return sdLogWarning
	case l >= slog.LevelInfo:
		return sdLogInfo
	}
	return sdLogDebug
}

// getLoglevel is GET_LOGLEVEL: the current level as an int32.
func (h *Handler) getLoglevel(_ context.Context, c *call) error {
	if h.cfg.LogLevel == nil {
		return proto.ResNoSupport
	}
	sd := sheepdogLevel(h.cfg.LogLevel.Level())
	h.cfg.Log.Debug("returning log level", "level", sd)
	out := make([]byte, 4)
	le.PutUint32(out, uint32(sd))
	c.out = out
	return nil
}

// setLoglevel is SET_LOGLEVEL: an int32 level 0..7 from the payload; it
// applies to the next log record.
func (h *Handler) setLoglevel(_ context.Context, c *call) error {
	if h.cfg.LogLevel == nil {
		return proto.ResNoSupport
	}
	if len(c.data) < 4 {
		return fmt.Errorf("log level of %d bytes: %w", len(c.data), proto.ResInvalidParms)
	}
	sd := int32(le.Uint32(c.data))
	l, ok := slogLevel(sd)
	if !ok {
		h.cfg.Log.Error("invalid log level", "level", sd)
		return fmt.Errorf("log level %d: %w", sd, proto.ResInvalidParms)
	}
	h.cfg.LogLevel.Set(l)
	h.cfg.Log.Info("log level set", "level", sd, "slog", l.String())
	return nil
}

// MetricsOps names the opcodes recorded by name in the native and peer
// request metrics; the others are recorded as "other".
var MetricsOps = map[uint8]string{
	uint8(proto.OpCreateAndWriteObj): "create_and_write_obj", uint8(proto.OpReadObj): "read_obj",
	uint8(proto.OpWriteObj): "write_obj", uint8(proto.OpRemoveObj): "remove_obj",
	uint8(proto.OpDiscardObj): "discard_obj", uint8(proto.OpFlushVdi): "flush_vdi",
	uint8(proto.OpNewVdi): "new_vdi", uint8(proto.OpLockVdi): "lock_vdi", uint8(proto.OpReleaseVdi): "release_vdi",
	uint8(proto.OpGetVdiInfo): "get_vdi_info", uint8(proto.OpDelVdi): "del_vdi",
	uint8(proto.OpCreateAndWritePeer): "create_and_write_peer", uint8(proto.OpReadPeer): "read_peer",
	uint8(proto.OpWritePeer): "write_peer", uint8(proto.OpRemovePeer): "remove_peer",
	uint8(proto.OpPunchPeer): "punch_peer", uint8(proto.OpFlushPeer): "flush_peer",
	uint8(proto.OpGetObjList): "get_obj_list", uint8(proto.OpRepairReplica): "repair_replica",
	uint8(proto.OpDecrefObj): "decref_obj", uint8(proto.OpDecrefPeer): "decref_peer",
}

// observe records a finished request in the metrics of its class: peer
// requests as "peer", everything else a client sent as "native". Bytes
// are counted as STAT counts them (begin).
func (h *Handler) observe(class statClass, req *proto.Request, start time.Time, err error) {
	m := h.cfg.Metrics
	if class == statPeer {
		m = h.cfg.PeerMetrics
	}
	if m == nil {
		return
	}
	var in, out int
	if req.Flags&proto.FlagCmdWrite != 0 {
		in = int(req.DataLength)
	} else if req.Opcode != proto.OpFlushVdi {
		out = int(req.DataLength)
	}
	m.Observe(uint8(req.Opcode), in, out, time.Since(start), err != nil)
}
