package replicated

import (
	"context"
	"encoding/json"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// fsm applies raft log entries to the State.
type fsm struct {
	mu sync.RWMutex
	st *cluster.State
	// applied is the log index of the last command in st. Invariant: st
	// holds exactly the commands with index <= applied. raft's own
	// AppliedIndex runs ahead of this: raft counts an entry applied when
	// it queues it for the FSM, not when the FSM has run it.
	applied uint64
	// changed is closed (and replaced) whenever applied or st changes:
	// waiters (WaitApplied, WaitEpoch) sleep on it instead of polling.
	changed chan struct{}

	onApply   func(e *cluster.Entry, res proto.Result)
	onRestore func()
}

func newFSM() *fsm {
	return &fsm{st: cluster.NewState(), changed: make(chan struct{})}
}

// notifyLocked wakes the waiters. The caller holds f.mu for writing.
func (f *fsm) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fsm) Apply(l *raft.Log) interface{} {
	var e cluster.Entry
	if err := json.Unmarshal(l.Data, &e); err != nil {
		f.mu.Lock()
		f.applied = l.Index
		f.notifyLocked()
		f.mu.Unlock()
		return proto.ResInvalidParms
	}
	f.mu.Lock()
	res := f.st.Apply(&e)
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(&e, res)
	}
	f.mu.Lock()
	f.applied = l.Index // after onApply: a waiter sees its effects too
	f.notifyLocked()
	f.mu.Unlock()
	return res
}

type fsmSnapshot struct{ b []byte }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (fsmSnapshot) Release() {}

// snapshotImage is what a raft snapshot holds: the state and the index of
// the last command in it.
type snapshotImage struct {
	Applied uint64
	State   *cluster.State
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(snapshotImage{Applied: f.applied, State: f.st})
	return fsmSnapshot{b}, err
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var img snapshotImage
	if err := json.Unmarshal(b, &img); err != nil {
		return err
	}
	if img.State == nil { // written before snapshots carried the index
		img.State = &cluster.State{}
		if err := json.Unmarshal(b, img.State); err != nil {
			return err
		}
	}
	img.State.Rebuild()
	f.mu.Lock()
	f.st = img.State
	f.applied = img.Applied
	f.notifyLocked()
	f.mu.Unlock()
	if f.onRestore != nil {
		f.onRestore()
	}
	return nil
}

// reset empties the state, for a node that drops its raft log to rejoin.
func (f *fsm) reset() {
	f.mu.Lock()
	f.st = cluster.NewState()
	f.applied = 0
	f.notifyLocked()
	f.mu.Unlock()
}

// wait blocks until done (called under the read lock) holds or ctx ends.
func (f *fsm) wait(ctx context.Context, done func() bool) error {
	for {
		f.mu.RLock()
		ok, ch := done(), f.changed
		f.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
