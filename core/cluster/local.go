package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Driver orders cluster entries and applies them to the State of every
// node. Propose returns once the entry is applied locally and durable.
type Driver interface {
	// Propose orders e, applies it and returns the state machine's result.
	// An error means the entry's fate is unknown (no quorum, shutdown).
	Propose(ctx context.Context, e *Entry) (proto.Result, error)
	// View runs f with the current state; f must not keep or modify it.
	View(f func(s *State))
	// ReadState returns the current state, held for reading until
	// ReleaseState: View without a function, for the request path, where
	// View's function escapes through this interface and costs an
	// allocation (and what it captures another) on every call. The caller
	// must not keep or modify the state, and calls ReleaseState before any
	// other call into the driver.
	ReadState() *State
	ReleaseState()
	// Sync waits until this node has applied every entry the cluster had
	// committed when Sync was called, so that a request arriving here sees
	// what was acknowledged through any other node.
	Sync(ctx context.Context) error
}

// Membership is what a driver that tracks live nodes offers beyond
// ordering entries (the replicated driver; a Local driver has none).
type Membership interface {
	// Members is the live nodes as failure detection sees them now. The
	// membership the cluster decided is the current epoch's node list.
	Members() []proto.Node
	// Quorum reports whether entries can be ordered now (a leader is
	// known); WaitQuorum waits for it.
	Quorum() bool
	WaitQuorum(ctx context.Context) error
	// Rejoining reports a node that belongs to a cluster whose state it
	// has not replayed yet.
	Rejoining() bool
	// WaitingForJoin reports a node restarted with its cluster that waits
	// for the last epoch's nodes to come back.
	WaitingForJoin() bool
	// Outside reports a node the current epoch leaves out (declared dead
	// while cut off, or not yet taken in); WaitMember waits until it is
	// in.
	Outside() bool
	WaitMember(ctx context.Context) error
	// ForceRecover commits a forced epoch (`cluster recover force`),
	// re-forming the cluster from this node when it has no quorum, and
	// returns the node list of the epoch before.
	ForceRecover(ctx context.Context) ([]proto.Node, error)
	// Leave takes this node out of the cluster while the process lives on.
	Leave()
}

// EpochWaiter is a driver that can wait for an epoch to be applied.
type EpochWaiter interface {
	// WaitEpoch returns once the local state is at epoch or later, or
	// when ctx ends.
	WaitEpoch(ctx context.Context, epoch uint32) error
}

// Local is the single-node driver: entries are applied in the order
// Propose is called, and the state is written to one file in the store dir
// (write temp, fsync, rename) before Propose returns.
type Local struct {
	// OnApply, when set, runs after every successful entry (see
	// replicated.Config.OnApply).
	OnApply func(e *Entry, res proto.Result)

	path string
	mu   sync.RWMutex
	st   *State
	// changed is closed and replaced by every applied entry (WaitEpoch).
	changed chan struct{}
}

// stateFile is the name of the persisted state inside the store dir.
const stateFile = "cluster.json"

// OpenLocal loads the state persisted in dir, or starts unformatted.
func OpenLocal(dir string) (*Local, error) {
	l := &Local{path: filepath.Join(dir, stateFile), st: &State{}, changed: make(chan struct{})}
	b, err := os.ReadFile(l.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, fmt.Errorf("cluster: read state: %w", err)
	default:
		if err := json.Unmarshal(b, l.st); err != nil {
			return nil, fmt.Errorf("cluster: decode %s: %w", l.path, err)
		}
	}
	l.st.init()
	l.st.rebuild()
	return l, nil
}

// Propose implements Driver.
func (l *Local) Propose(ctx context.Context, e *Entry) (proto.Result, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	res := l.st.Apply(e)
	if res != proto.ResSuccess {
		return res, nil
	}
	if err := l.persist(); err != nil {
		return 0, err
	}
	close(l.changed)
	l.changed = make(chan struct{})
	if l.OnApply != nil {
		l.OnApply(e, res)
	}
	return res, nil
}

// WaitEpoch implements EpochWaiter.
func (l *Local) WaitEpoch(ctx context.Context, epoch uint32) error {
	for {
		l.mu.RLock()
		ok, ch := l.st.Epoch() >= epoch, l.changed
		l.mu.RUnlock()
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

// Sync implements Driver: a single node is always up to date.
func (l *Local) Sync(ctx context.Context) error { return ctx.Err() }

// View implements Driver.
func (l *Local) View(f func(s *State)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	f(l.st)
}

// ReadState implements Driver.
func (l *Local) ReadState() *State {
	l.mu.RLock()
	return l.st
}

// ReleaseState implements Driver.
func (l *Local) ReleaseState() { l.mu.RUnlock() }

func (l *Local) persist() error {
	b, err := json.Marshal(l.st)
	if err != nil {
		return fmt.Errorf("cluster: encode state: %w", err)
	}
	return WriteFileSync(l.path, b)
}

// WriteFileSync replaces path with b durably: temp file, fsync, rename,
// fsync of the directory.
func WriteFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// QuorumWait bounds how long a write waits for its cluster to have a
// quorum before it is refused (AwaitQuorum).
const QuorumWait = 10 * time.Second

// AwaitQuorum returns at once when d can order entries (it has no
// Membership, or a quorum). Otherwise this node is in a minority: a write
// acknowledged here could be lost to an epoch the majority commits
// meanwhile, so the write waits up to QuorumWait for a quorum to come back
// (a recovered majority, or `cluster recover force`), and is refused with
// HALT if none does. Reads need no quorum: the copies here are served.
func AwaitQuorum(ctx context.Context, d Driver) error {
	m, ok := d.(Membership)
	if !ok || m.Quorum() {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, QuorumWait)
	defer cancel()
	if m.WaitQuorum(wctx) != nil {
		return fmt.Errorf("no quorum to order writes: %w", proto.ResHalt)
	}
	return nil
}
