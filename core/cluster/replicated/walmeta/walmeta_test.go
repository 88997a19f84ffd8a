package walmeta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

func segs(n int) []types.SegmentInfo {
	out := make([]types.SegmentInfo, n)
	for i := range out {
		out[i] = types.SegmentInfo{ID: uint64(i + 1), BaseIndex: uint64(100*i + 1), MinIndex: uint64(100*i + 1),
			Codec: 1, SizeLimit: 16 << 10, CreateTime: time.Unix(1700000000, int64(i))}
		if i < n-1 {
			out[i].MaxIndex, out[i].IndexStart, out[i].SealTime = uint64(100*i+100), 9000, time.Unix(1700000100, 7)
		}
	}
	return out
}

// sameState compares states, their times by instant.
func sameState(a, b types.PersistentState) bool {
	if a.NextSegmentID != b.NextSegmentID || len(a.Segments) != len(b.Segments) {
		return false
	}
	for i, x := range a.Segments {
		y := b.Segments[i]
		if !x.CreateTime.Equal(y.CreateTime) || !x.SealTime.Equal(y.SealTime) {
			return false
		}
		x.CreateTime, x.SealTime, y.CreateTime, y.SealTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if x != y {
			return false
		}
	}
	return true
}

func load(t *testing.T, dir string) (*Store, types.PersistentState) {
	t.Helper()
	s := &Store{}
	st, err := s.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, st
}

func TestEmptyStoreLoadsEmpty(t *testing.T) {
	s, st := load(t, t.TempDir())
	if st.NextSegmentID != 0 || len(st.Segments) != 0 {
		t.Fatalf("new store holds %+v", st)
	}
	if v, _ := s.GetStable([]byte("CurrentTerm")); v != nil {
		t.Fatalf("new store has a term: %x", v)
	}
}

func TestCommitsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := load(t, dir)
	for i := 1; i <= 5; i++ {
		if err := s.CommitState(types.PersistentState{NextSegmentID: uint64(i + 1), Segments: segs(i)}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetStable([]byte("CurrentTerm"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetStable([]byte("LastVoteCand"), []byte("node-b")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, st := load(t, dir)
	want := types.PersistentState{NextSegmentID: 6, Segments: segs(5)}
	if !sameState(st, want) {
		t.Fatalf("reopened state\n got %+v\nwant %+v", st, want)
	}
	for k, want := range map[string]string{"CurrentTerm": "\x05", "LastVoteCand": "node-b"} {
		if v, _ := s2.GetStable([]byte(k)); string(v) != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
}

// A crash in the middle of a commit leaves the file being written torn;
// the store then holds the commit before it.
func TestTornWriteKeepsPreviousCommit(t *testing.T) {
	dir := t.TempDir()
	s, _ := load(t, dir)
	for i := 1; i <= 3; i++ {
		if err := s.CommitState(types.PersistentState{NextSegmentID: uint64(i), Segments: segs(i)}); err != nil {
			t.Fatal(err)
		}
	}
	newest := FileNames[s.newest] // the next commit writes the other one
	older := filepath.Join(dir, FileNames[1-s.newest])
	s.Close()
	orig, err := os.ReadFile(older)
	if err != nil {
		t.Fatal(err)
	}
	next := record{seq: 4, state: types.PersistentState{NextSegmentID: 4, Segments: segs(4)}}.encode()
	for _, cut := range []int{0, 3, headerSize + 5, len(next) - 1} {
		// The commit of segs(4) reached the disk up to cut bytes.
		b := append([]byte(nil), orig...)
		if len(b) < cut {
			b = append(b, make([]byte, cut-len(b))...)
		}
		copy(b, next[:cut])
		if err := os.WriteFile(older, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s2, st := load(t, dir)
		if st.NextSegmentID != 3 || len(st.Segments) != 3 {
			t.Fatalf("cut at %d: loaded %d segments (next %d), want the 3 of the last commit", cut, len(st.Segments), st.NextSegmentID)
		}
		s2.Close()
	}
	// With the newest record unreadable, the one before it is loaded, not
	// an empty store.
	if err := os.WriteFile(older, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, newest), 0); err != nil {
		t.Fatal(err)
	}
	_, st := load(t, dir)
	if st.NextSegmentID != 2 {
		t.Fatalf("with the newest file gone, loaded next segment %d, want 2 (the commit before)", st.NextSegmentID)
	}
}

func TestShrinkingRecordOverwritesLongerOne(t *testing.T) {
	dir := t.TempDir()
	s, _ := load(t, dir)
	for _, n := range []int{60, 60, 1, 1} {
		if err := s.CommitState(types.PersistentState{NextSegmentID: uint64(n), Segments: segs(n)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	_, st := load(t, dir)
	if len(st.Segments) != 1 {
		t.Fatalf("loaded %d segments, want 1", len(st.Segments))
	}
}

func TestAdoptsBoltStore(t *testing.T) {
	dir := t.TempDir()
	var b metadb.BoltMetaDB
	if _, err := b.Load(dir); err != nil {
		t.Fatal(err)
	}
	want := types.PersistentState{NextSegmentID: 4, Segments: segs(3)}
	if err := b.CommitState(want); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"CurrentTerm": "\x00\x00\x00\x00\x00\x00\x00\x07", "LastVoteCand": "n2", "LastVoteTerm": "\x07"} {
		if err := b.SetStable([]byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	s, st := load(t, dir)
	// bolt keeps times at its own precision: compare what raft-wal reads.
	if st.NextSegmentID != 4 || len(st.Segments) != 3 || st.Segments[2].BaseIndex != 201 {
		t.Fatalf("adopted %+v", st)
	}
	if v, _ := s.GetStable([]byte("LastVoteCand")); string(v) != "n2" {
		t.Fatalf("LastVoteCand = %q", v)
	}
	if _, err := os.Stat(filepath.Join(dir, metadb.FileName)); !os.IsNotExist(err) {
		t.Fatalf("bolt store still there: %v", err)
	}
	s.Close()
	s2, st2 := load(t, dir)
	if !sameState(st, st2) {
		t.Fatalf("reload after adopting: %+v, want %+v", st2, st)
	}
	if v, _ := s2.GetStable([]byte("CurrentTerm")); !bytes.Equal(v, []byte("\x00\x00\x00\x00\x00\x00\x00\x07")) {
		t.Fatalf("CurrentTerm = %x", v)
	}
}

func TestDecodeRejectsChangedRecords(t *testing.T) {
	b := record{seq: 1, state: types.PersistentState{NextSegmentID: 2, Segments: segs(2)}}.encode()
	// A changed body fails its checksum: a torn write, not an error.
	changed := append([]byte(nil), b...)
	changed[headerSize+8]++
	if _, ok, err := decodeRecord(changed); ok || err != nil {
		t.Fatalf("changed body: ok %v err %v, want neither", ok, err)
	}
	// A body whose checksum holds but whose segment count runs past its
	// end is corrupt: no crash writes that.
	bad := append([]byte(nil), b...)
	bad[headerSize+8] = 200
	sum := crc32.Update(crc32.Checksum(bad[4:16], castagnoli), castagnoli, bad[headerSize:])
	binary.LittleEndian.PutUint32(bad[16:], sum)
	if _, ok, err := decodeRecord(bad); ok || !errors.Is(err, errCorrupt) {
		t.Fatalf("bad count: ok %v err %v, want errCorrupt", ok, err)
	}
}

func TestConcurrentCommitsAndStableWrites(t *testing.T) {
	dir := t.TempDir()
	s, _ := load(t, dir)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				var err error
				if g == 0 {
					err = s.CommitState(types.PersistentState{NextSegmentID: uint64(i), Segments: segs(i%5 + 1)})
				} else {
					err = s.SetStable([]byte(fmt.Sprint("k", g)), []byte(fmt.Sprint(i)))
					s.GetStable([]byte("k1"))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	s.Close()
	s2, st := load(t, dir)
	if st.NextSegmentID != 19 {
		t.Fatalf("NextSegmentID = %d, want 19", st.NextSegmentID)
	}
	for g := 1; g < 4; g++ {
		if v, _ := s2.GetStable([]byte(fmt.Sprint("k", g))); string(v) != "19" {
			t.Errorf("k%d = %q, want 19", g, v)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(record{seq: 3, state: types.PersistentState{NextSegmentID: 2, Segments: segs(2)},
		stable: map[string][]byte{"CurrentTerm": {1}}}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok, err := decodeRecord(b)
		if !ok || err != nil {
			return
		}
		// What decodes encodes back to the same record.
		r2, ok2, err2 := decodeRecord(r.encode())
		if !ok2 || err2 != nil || r2.seq != r.seq || len(r2.state.Segments) != len(r.state.Segments) || len(r2.stable) != len(r.stable) {
			t.Fatalf("re-encoded record does not decode the same: %v %v", ok2, err2)
		}
	})
}
