package proto

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeNodes is an object store for B-tree writes: the inode and the leaf
// objects, as byte slices of their full size.
type fakeNodes map[uint64][]byte

func (f fakeNodes) apply(t *testing.T, w BtreeWrite) {
	t.Helper()
	b, ok := f[w.Oid]
	if w.Create {
		if ok {
			t.Fatalf("create of existing node %016x", w.Oid)
		}
		b = nil
	} else if !ok {
		t.Fatalf("write to missing object %016x", w.Oid)
	}
	// Objects are sparse: grown to what was written.
	if end := int(w.Off) + len(w.Data); end > len(b) {
		b = append(b, make([]byte, end-len(b))...)
	}
	copy(b[w.Off:], w.Data)
	f[w.Oid] = b
}

func (f fakeNodes) decode(t *testing.T, vid uint32) *Btree {
	t.Helper()
	ino := append(f[VidToVdiOid(vid)], make([]byte, 4096)...) // the zeros of a sparse object
	counter := binary.LittleEndian.Uint32(ino[InodeBtreeCounterOffset:])
	tree, err := DecodeBtree(vid, counter, ino[DataVdiIDOffset:], func(oid uint64) ([]byte, error) {
		b, ok := f[oid]
		if !ok {
			return nil, errors.New("no such node")
		}
		return append(b, make([]byte, 64)...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func newFakeVolume(vid uint32) fakeNodes {
	f := fakeNodes{VidToVdiOid(vid): make([]byte, DataVdiIDOffset+BtreeHeaderSize)}
	copy(f[VidToVdiOid(vid)][DataVdiIDOffset:], NewBtreeRoot())
	return f
}

func wantTree(t *testing.T, tree *Btree, model map[uint32]uint32) {
	t.Helper()
	var got []uint32
	tree.Walk(func(idx, vid uint32) {
		got = append(got, idx)
		if model[idx] != vid {
			t.Fatalf("entry %d names %x, want %x", idx, vid, model[idx])
		}
	})
	if !slices.IsSorted(got) || len(got) != len(model) {
		t.Fatalf("walk gave %d entries (sorted %v), want %d", len(got), slices.IsSorted(got), len(model))
	}
	for idx, vid := range model {
		if g := tree.Get(idx); g != vid {
			t.Fatalf("Get(%d) = %x, want %x", idx, g, vid)
		}
	}
}

// Random sets on a tree with tiny nodes (so that the root and leaves
// split often): the tree in memory and the one decoded from the writes
// always hold exactly the model's entries.
func TestBtreeSetMatchesModel(t *testing.T) {
	const vid = 0x7c2b25
	for _, seq := range []string{"random", "ascending", "descending"} {
		t.Run(seq, func(t *testing.T) {
			f := newFakeVolume(vid)
			tree := NewBtree(vid)
			tree.maxLeaf, tree.maxRoot = 4, 200
			model := map[uint32]uint32{}
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 300 {
				var idx uint32
				switch seq {
				case "random":
					idx = rng.Uint32N(400) << 20 // spread over 2^32
				case "ascending":
					idx = uint32(i) * 3
				default:
					idx = 1<<32 - 1 - uint32(i)*5
				}
				v := rng.Uint32N(3) + vid - 1
				w, err := tree.Set(idx, v)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range w {
					f.apply(t, x)
				}
				model[idx] = v
				wantTree(t, tree, model)
				back := f.decode(t, vid)
				back.maxLeaf, back.maxRoot = 4, 200
				wantTree(t, back, model)
			}
			if tree.Depth() != 2 || len(tree.Nodes()) < 50 {
				t.Fatalf("depth %d with %d leaves: the splits were not exercised", tree.Depth(), len(tree.Nodes()))
			}
		})
	}
}

// A crash after any prefix of a Set's writes leaves a tree that decodes
// and still holds every entry set before.
func TestBtreeCrashBetweenWrites(t *testing.T) {
	const vid = 0x42
	rng := rand.New(rand.NewPCG(3, 4))
	f := newFakeVolume(vid)
	tree := NewBtree(vid)
	tree.maxLeaf, tree.maxRoot = 4, 200
	model := map[uint32]uint32{}
	for range 200 {
		idx, v := rng.Uint32N(1000), rng.Uint32N(5)+1
		w, err := tree.Set(idx, v)
		if err != nil {
			t.Fatal(err)
		}
		for k := range len(w) {
			crashed := fakeNodes{}
			for oid, b := range f {
				crashed[oid] = slices.Clone(b)
			}
			for _, x := range w[:k] {
				crashed.apply(t, x)
			}
			back := crashed.decode(t, vid)
			for i, want := range model {
				if g := back.Get(i); g != want && i != idx {
					t.Fatalf("after %d of %d writes of set(%d): entry %d names %d, want %d", k, len(w), idx, i, g, want)
				}
			}
		}
		for _, x := range w {
			f.apply(t, x)
		}
		model[idx] = v
	}
}

// Roots that do not decode: wrong magic, depth, counts, order.
func TestBtreeDecodeRejects(t *testing.T) {
	leaf := encodeLeaf([]BtreeIndex{{1, 5}, {7, 5}})
	noNode := func(uint64) ([]byte, error) { return nil, errors.New("none") }
	for name, root := range map[string][]byte{
		"magic":     {0x75, 0x62, 1, 0, 0, 0, 0, 0},
		"depth 3":   {0x74, 0x62, 3, 0, 0, 0, 0, 0},
		"too many":  {0x74, 0x62, 1, 0, 0xff, 0xff, 0xff, 0xff},
		"truncated": leaf[:12],
		"order":     encodeLeaf([]BtreeIndex{{7, 5}, {1, 5}}),
		"no leaf":   (&Btree{depth: 2, ind: []btreeIndirect{{maxIdx: 3, oid: 9}}}).encodeRoot(),
	} {
		if _, err := DecodeBtree(1, 0, root, noNode); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	tree, err := DecodeBtree(1, 0, make([]byte, 64), noNode)
	if err != nil || tree.Get(0) != 0 {
		t.Fatalf("an all-zero root (depth 0) is an empty tree: %v", err)
	}
}

// FuzzDecodeBtree decodes arbitrary roots and leaves: no panic, and a tree
// that decodes walks in index order and answers Get for what it walks.
func FuzzDecodeBtree(f *testing.F) {
	f.Add(NewBtreeRoot(), encodeLeaf([]BtreeIndex{{1, 2}}))
	f.Add(encodeLeaf([]BtreeIndex{{1, 2}, {3, 4}}), []byte{})
	f.Add((&Btree{depth: 2, ind: []btreeIndirect{{maxIdx: 3, oid: 9}}}).encodeRoot(), encodeLeaf([]BtreeIndex{{1, 2}, {3, 4}}))
	f.Fuzz(func(t *testing.T, root, leaf []byte) {
		tree, err := DecodeBtree(1, 0, root, func(uint64) ([]byte, error) { return leaf, nil })
		if err != nil {
			return
		}
		var last int64 = -1
		tree.Walk(func(idx, vid uint32) {
			if int64(idx) <= last && tree.Depth() == 1 {
				t.Fatalf("walk out of order: %d after %d", idx, last)
			}
			last = int64(idx)
		})
		if _, err := tree.Set(5, 1); err != nil && !errors.Is(err, ResNoSpace) {
			t.Fatal(err)
		}
	})
}
