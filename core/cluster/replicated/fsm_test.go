package replicated

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

func formatEntry() *cluster.Entry {
	return &cluster.Entry{Kind: cluster.KindFormat, Ctime: 0x5f00000000000001, Time: 1600000000, Copies: 3,
		Nodes: []proto.Node{{NrVnodes: 128}}}
}

// A waiter on the applied index must not see an entry before the state
// (and the OnApply hook) ran it: raft's own AppliedIndex is bumped when the
// entry is queued, which let a follower answer GET_CLUSTER_DEFAULT with the
// pre-format zeros right after Sync returned.
func TestFsmAppliedAfterHook(t *testing.T) {
	f := newFSM()
	var seenInHook uint64
	f.onApply = func(e *cluster.Entry, res proto.Result) {
		f.mu.RLock()
		seenInHook = f.applied
		f.mu.RUnlock()
	}
	b, _ := json.Marshal(formatEntry())
	if res := f.Apply(&raft.Log{Index: 7, Data: b}); res != proto.ResSuccess {
		t.Fatalf("format: %v", res)
	}
	if seenInHook != 0 {
		t.Fatalf("applied index %d visible before the hook finished", seenInHook)
	}
	if f.applied != 7 {
		t.Fatalf("applied %d, want 7", f.applied)
	}
	if res := f.Apply(&raft.Log{Index: 9, Data: []byte("{garbage")}); res != proto.ResInvalidParms || f.applied != 9 {
		t.Fatalf("undecodable entry: %v, applied %d", res, f.applied)
	}
}

type memSink struct {
	bytes.Buffer
}

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

func TestFsmSnapshotKeepsAppliedIndex(t *testing.T) {
	f := newFSM()
	b, _ := json.Marshal(formatEntry())
	f.Apply(&raft.Log{Index: 12, Data: b})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.applied != 12 || g.st.NrCopies != 3 || g.st.Epoch() != 1 {
		t.Fatalf("restored applied %d copies %d epoch %d", g.applied, g.st.NrCopies, g.st.Epoch())
	}

	// A snapshot written before images carried the index is the bare state.
	old, _ := json.Marshal(f.st)
	h := newFSM()
	if err := h.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if h.applied != 0 || h.st.NrCopies != 3 || !h.st.Formatted() {
		t.Fatalf("old-format restore: applied %d copies %d", h.applied, h.st.NrCopies)
	}
	if err := h.Restore(io.NopCloser(bytes.NewReader([]byte("{")))); err == nil {
		t.Fatal("a torn snapshot restored without error")
	}
}
