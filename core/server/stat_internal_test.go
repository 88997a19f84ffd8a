package server

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestLogLevelMapping(t *testing.T) {
	for _, tc := range []struct {
		sd   int32
		slog slog.Level
		back int32 // what GET reports after SET sd
	}{
		{0, slog.LevelError, 3}, // emerg
		{1, slog.LevelError, 3}, // alert
		{2, slog.LevelError, 3}, // crit
		{3, slog.LevelError, 3}, // err
		{4, slog.LevelWarn, 4},  // warning
		{5, slog.LevelInfo, 6},  // notice
		{6, slog.LevelInfo, 6},  // info
		{7, slog.LevelDebug, 7}, // debug
	} {
		l, ok := slogLevel(tc.sd)
		if !ok || l != tc.slog {
			t.Errorf("slogLevel(%d) = %v, %v; want %v", tc.sd, l, ok, tc.slog)
		}
		if got := sheepdogLevel(l); got != tc.back {
			t.Errorf("sheepdogLevel(%v) = %d, want %d", l, got, tc.back)
		}
	}
	for _, sd := range []int32{-1, 8, 1 << 30} {
		if _, ok := slogLevel(sd); ok {
			t.Errorf("slogLevel(%d) accepted", sd)
		}
	}
	// Levels between slog's named ones report the Sheepdog level that
	// logs the same records.
	for l, want := range map[slog.Level]int32{slog.LevelError + 4: 3, slog.LevelWarn + 1: 4, slog.LevelInfo + 2: 6, slog.LevelDebug - 4: 7} {
		if got := sheepdogLevel(l); got != want {
			t.Errorf("sheepdogLevel(%v) = %d, want %d", l, got, want)
		}
	}
}

func TestLogLevelOps(t *testing.T) {
	ctx := context.Background()
	var level slog.LevelVar
	h := &Handler{cfg: Config{Log: slog.New(slog.DiscardHandler), LogLevel: &level}}
	get := func() int32 {
		t.Helper()
		c := &call{}
		if err := h.getLoglevel(ctx, c); err != nil || len(c.out) != 4 {
			t.Fatalf("GET_LOGLEVEL: %v, %d bytes", err, len(c.out))
		}
		return int32(le.Uint32(c.out))
	}
	set := func(sd int32) error {
		data := make([]byte, 4)
		le.PutUint32(data, uint32(sd))
		return h.setLoglevel(ctx, &call{data: data})
	}
	if got := get(); got != 6 {
		t.Fatalf("default level reads %d, want 6 (info)", got)
	}
	if err := set(7); err != nil || level.Level() != slog.LevelDebug || get() != 7 {
		t.Fatalf("set debug: %v, level %v", err, level.Level())
	}
	if err := set(0); err != nil || level.Level() != slog.LevelError || get() != 3 {
		t.Fatalf("set emerg: %v, level %v", err, level.Level())
	}
	for _, sd := range []int32{-1, 8} {
		if err := set(sd); !errors.Is(err, proto.ResInvalidParms) {
			t.Errorf("set %d: %v, want INVALID_PARMS", sd, err)
		}
	}
	if err := h.setLoglevel(ctx, &call{data: []byte{7}}); !errors.Is(err, proto.ResInvalidParms) {
		t.Errorf("1-byte payload: %v, want INVALID_PARMS", err)
	}
	if level.Level() != slog.LevelError {
		t.Errorf("refused sets changed the level to %v", level.Level())
	}

	bare := &Handler{cfg: Config{Log: slog.New(slog.DiscardHandler)}}
	if err := bare.getLoglevel(ctx, &call{}); !errors.Is(err, proto.ResNoSupport) {
		t.Errorf("GET without a LevelVar: %v, want NO_SUPPORT", err)
	}
}

// TestRequestStatsBeginEnd checks which counters each request moves, as
// Sheepdog's stat_request_begin/end.
func TestRequestStatsBeginEnd(t *testing.T) {
	req := func(op proto.Opcode, write bool, n uint32) *proto.Request {
		r := proto.NewRequest(op)
		if write {
			r.Flags |= proto.FlagCmdWrite
		}
		r.DataLength = n
		return &r
	}
	for _, tc := range []struct {
		name string
		req  *proto.Request
		want proto.Stat
	}{
		{"READ_OBJ", req(proto.OpReadObj, false, 4096), proto.Stat{GwayTotal: 1, GwayRead: 1, GwayTx: 4096}},
		{"WRITE_OBJ", req(proto.OpWriteObj, true, 512), proto.Stat{GwayTotal: 1, GwayWrite: 1, GwayRx: 512}},
		{"CREATE_AND_WRITE_OBJ", req(proto.OpCreateAndWriteObj, true, 100), proto.Stat{GwayTotal: 1, GwayWrite: 1, GwayRx: 100}},
		{"REMOVE_OBJ", req(proto.OpRemoveObj, false, 0), proto.Stat{GwayTotal: 1, GwayRemove: 1}},
		{"DISCARD_OBJ", req(proto.OpDiscardObj, false, 0), proto.Stat{GwayTotal: 1, GwayRemove: 1}},
		{"FLUSH_VDI", req(proto.OpFlushVdi, false, 0), proto.Stat{GwayTotal: 1, GwayFlush: 1}},
		{"READ_PEER", req(proto.OpReadPeer, false, 8192), proto.Stat{PeerTotal: 1, PeerRead: 1, PeerTx: 8192}},
		{"WRITE_PEER", req(proto.OpWritePeer, true, 7), proto.Stat{PeerTotal: 1, PeerWrite: 1, PeerRx: 7}},
		{"CREATE_AND_WRITE_PEER", req(proto.OpCreateAndWritePeer, true, 9), proto.Stat{PeerTotal: 1, PeerWrite: 1, PeerRx: 9}},
		{"REMOVE_PEER", req(proto.OpRemovePeer, false, 0), proto.Stat{PeerTotal: 1, PeerRemove: 1}},
		{"FLUSH_PEER", req(proto.OpFlushPeer, false, 0), proto.Stat{PeerTotal: 1}},
		{"NEW_VDI", req(proto.OpNewVdi, true, 256), proto.Stat{}},
		{"STAT", req(proto.OpStat, false, proto.StatSize), proto.Stat{}},
	} {
		var st requestStats
		class := st.begin(tc.req)
		running := tc.want
		running.GwayActive, running.PeerActive = tc.want.GwayTotal, tc.want.PeerTotal
		if got := st.snapshot(); got != running {
			t.Errorf("%s running: %+v, want %+v", tc.name, got, running)
		}
		st.end(class)
		if got := st.snapshot(); got != tc.want {
			t.Errorf("%s done: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
