package cluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func propose(t *testing.T, d Driver, e *Entry, want proto.Result) {
	t.Helper()
	res, err := d.Propose(context.Background(), e)
	if err != nil {
		t.Fatalf("propose kind %d: %v", e.Kind, err)
	}
	if res != want {
		t.Fatalf("propose kind %d: %v, want %v", e.Kind, res, want)
	}
}

func snapshot(d Driver) *State {
	var c *State
	d.View(func(s *State) { c = s.Clone() })
	return c
}

// TestLocalPersists: what a Local driver applied is there, bitmaps and
// all, after the store dir is opened again.
func TestLocalPersists(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	var applied []Kind
	l.OnApply = func(e *Entry, res proto.Result) {
		if res != proto.ResSuccess {
			t.Errorf("OnApply called with %v", res)
		}
		applied = append(applied, e.Kind)
	}
	if snapshot(l).Formatted() {
		t.Fatal("a fresh dir opened formatted")
	}
	propose(t, l, &Entry{Kind: KindAddVdi, Vid: 3}, proto.ResWaitForFormat)
	propose(t, l, formatEntry(), proto.ResSuccess)
	for _, vid := range []uint32{0x7c2b25, 0x7c2b26, 1, proto.NrVdis - 1} {
		propose(t, l, &Entry{Kind: KindAddVdi, Vid: vid, Copies: 2, BlockSizeShift: 22}, proto.ResSuccess)
	}
	propose(t, l, &Entry{Kind: KindAddVdi, Vid: 0x7c2b26}, proto.ResVdiExist)
	propose(t, l, &Entry{Kind: KindAddVdi, Vid: 0x7c2b27, OldVid: 0x7c2b26, SnapshotOld: true, ParentVid: 0x7c2b26}, proto.ResSuccess)
	propose(t, l, &Entry{Kind: KindDelVdi, Vid: 1}, proto.ResSuccess)
	propose(t, l, &Entry{Kind: KindLock, Vid: 0x7c2b25, Owner: nodeB.NodeID}, proto.ResSuccess)
	propose(t, l, &Entry{Kind: KindEpoch, Time: 1600000300, Nodes: []proto.Node{nodeB, nodeA}}, proto.ResSuccess)
	propose(t, l, &Entry{Kind: KindRecovery, DisableRecovery: true}, proto.ResSuccess)
	propose(t, l, &Entry{Kind: KindShutdown}, proto.ResSuccess)

	wantApplied := []Kind{KindFormat, KindAddVdi, KindAddVdi, KindAddVdi, KindAddVdi, KindAddVdi, KindDelVdi, KindLock, KindEpoch, KindRecovery, KindShutdown}
	if !reflect.DeepEqual(applied, wantApplied) {
		t.Errorf("OnApply saw %v, want %v (refused entries excluded)", applied, wantApplied)
	}
	before := snapshot(l)

	l2, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(l2)
	if !reflect.DeepEqual(after.Epochs, before.Epochs) {
		t.Errorf("epochs after reopen = %+v, want %+v", after.Epochs, before.Epochs)
	}
	if !reflect.DeepEqual(after.Vdis, before.Vdis) {
		t.Errorf("vdis after reopen differ")
	}
	if !bytes.Equal(after.InUseBitmap(), before.InUseBitmap()) || !bytes.Equal(after.DeletedBitmap(), before.DeletedBitmap()) {
		t.Error("bitmaps were not rebuilt to the same bits")
	}
	if !reflect.DeepEqual(after, before) {
		t.Errorf("state after reopen = %v, want %v", after, before)
	}
	for _, tc := range []struct {
		vid              uint32
		inuse, deleted   bool
		snapshot, locked bool
	}{
		{0x7c2b25, true, false, false, true},
		{0x7c2b26, true, false, true, false},
		{0x7c2b27, true, false, false, false},
		{1, true, true, false, false},
		{proto.NrVdis - 1, true, false, false, false},
		{2, false, false, false, false},
	} {
		v := after.VdiState(tc.vid)
		snap, locked := v != nil && v.Snapshot, v != nil && v.LockState == proto.LockStateLocked
		if after.InUse(tc.vid) != tc.inuse || after.IsDeleted(tc.vid) != tc.deleted || snap != tc.snapshot || locked != tc.locked {
			t.Errorf("vid %#x after reopen: inuse %v deleted %v snapshot %v locked %v", tc.vid, after.InUse(tc.vid), after.IsDeleted(tc.vid), snap, locked)
		}
	}
	if after.FirstClear(0x7c2b25) != 0x7c2b28 {
		t.Errorf("first clear after reopen = %#x, want 0x7c2b28", after.FirstClear(0x7c2b25))
	}
	// A shutdown entry describes a run, not the cluster: a sheep started
	// again serves.
	if after.Status() != proto.StatusOK || !after.DisableRecovery || after.Epoch() != 2 {
		t.Errorf("after reopen: status %d recovery disabled %v epoch %d", after.Status(), after.DisableRecovery, after.Epoch())
	}

	// The reopened driver goes on from there.
	propose(t, l2, &Entry{Kind: KindAddVdi, Vid: 0x7c2b25}, proto.ResVdiExist)
	propose(t, l2, &Entry{Kind: KindAddVdi, Vid: 0x7c2b28}, proto.ResSuccess)
}

func TestLocalProposeCancelled(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Propose(ctx, formatEntry()); !errors.Is(err, context.Canceled) {
		t.Fatalf("propose with a cancelled context: %v", err)
	}
	if snapshot(l).Formatted() {
		t.Error("a cancelled proposal was applied")
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Errorf("a cancelled proposal was persisted: %v", err)
	}
}

func TestLocalRefusesCorruptState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(dir); err == nil {
		t.Fatal("OpenLocal accepted a corrupt state file")
	}
}

// TestLocalPersistFailure: when the state cannot be written, Propose
// reports an error rather than success.
func TestLocalPersistFailure(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the temp file would go makes the write fail.
	if err := os.Mkdir(filepath.Join(dir, stateFile+".tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Propose(context.Background(), formatEntry()); err == nil {
		t.Fatal("Propose succeeded although the state could not be persisted")
	}
}

// noQuorum is a driver in a minority: its quorum comes back when told.
type noQuorum struct {
	*Local
	back chan struct{}
}

func (n noQuorum) Members() []proto.Node { return nil }
func (n noQuorum) Quorum() bool {
	select {
	case <-n.back:
		return true
	default:
		return false
	}
}
func (n noQuorum) WaitQuorum(ctx context.Context) error {
	select {
	case <-n.back:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (noQuorum) Rejoining() bool                  { return false }
func (noQuorum) WaitingForJoin() bool             { return false }
func (noQuorum) Outside() bool                    { return false }
func (noQuorum) WaitMember(context.Context) error { return nil }
func (noQuorum) ForceRecover(context.Context) ([]proto.Node, error) {
	return nil, nil
}
func (noQuorum) Leave() {}

func TestAwaitQuorum(t *testing.T) {
	l, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := AwaitQuorum(context.Background(), l); err != nil {
		t.Fatalf("a local driver always has quorum: %v", err)
	}
	d := noQuorum{l, make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := AwaitQuorum(ctx, d); proto.ResultOf(err) != proto.ResHalt {
		t.Fatalf("without quorum: %v, want HALT", err)
	}
	go func() { time.Sleep(20 * time.Millisecond); close(d.back) }()
	if err := AwaitQuorum(context.Background(), d); err != nil {
		t.Fatalf("quorum back while waiting: %v", err)
	}
}
