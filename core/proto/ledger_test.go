package proto

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// ledgerWords returns the first n counters of l.
func ledgerWords(l []byte, n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(l[4*i:])
	}
	return w
}

func TestLedgerDecref(t *testing.T) {
	const m1, m2 = ^uint32(0), ^uint32(1) // -1, -2
	for _, c := range []struct {
		name       string
		start      []uint32 // nil: no ledger yet
		gen, count uint32
		want       []uint32
		zero       bool
		lo, hi     int
	}{
		{"first drop of a copy (copy-on-write away from a snapshot)", nil, 1, 0, []uint32{1, m1, 0}, false, 0, 12},
		{"second copy drops", []uint32{1, m1}, 1, 0, []uint32{1, m2, 0}, false, 4, 12},
		{"the base goes, its two copies gone already", []uint32{1, m2}, 0, 2, []uint32{0, 0, 0}, true, 0, 8},
		{"the base goes first: its copies become known", nil, 0, 2, []uint32{0, 2, 0}, false, 0, 8},
		{"then a copy", []uint32{0, 2}, 1, 0, []uint32{0, 1, 0}, false, 4, 12},
		{"and the last copy", []uint32{0, 1}, 1, 0, []uint32{0, 0, 0}, true, 4, 12},
		{"a copy of a copy, copied once", []uint32{0, 1}, 1, 1, []uint32{0, 0, 1}, false, 4, 12},
		{"deep generation", nil, 5, 3, []uint32{1, 0, 0, 0, 0, m1, 3}, false, 0, 28},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := make([]byte, LedgerSize)
			for i, v := range c.start {
				binary.LittleEndian.PutUint32(l[4*i:], v)
			}
			zero, lo, hi, err := LedgerDecref(l, c.start == nil, c.gen, c.count)
			if err != nil {
				t.Fatal(err)
			}
			if got := ledgerWords(l, len(c.want)); !slices.Equal(got, c.want) || zero != c.zero || lo != c.lo || hi != c.hi {
				t.Errorf("ledger %x zero %v changed [%d,%d), want %x %v [%d,%d)", got, zero, lo, hi, c.want, c.zero, c.lo, c.hi)
			}
			if !allZero(l[4*len(c.want):]) {
				t.Error("counters beyond the expected ones changed")
			}
		})
	}
}

func TestLedgerDecrefBounds(t *testing.T) {
	l := make([]byte, LedgerSize)
	if _, _, _, err := LedgerDecref(l, true, LedgerEntries-1, 0); !errors.Is(err, ResInvalidParms) {
		t.Errorf("last generation: %v, want INVALID_PARMS (its copies would be past the end)", err)
	}
	if _, _, _, err := LedgerDecref(l[:8], true, 0, 0); !errors.Is(err, ResInvalidParms) {
		t.Errorf("short ledger: %v, want INVALID_PARMS", err)
	}
	if !allZero(l) {
		t.Error("a refused drop changed the ledger")
	}
	if _, _, hi, err := LedgerDecref(l, true, LedgerEntries-2, 1); err != nil || hi != LedgerSize {
		t.Errorf("second to last generation: hi %d err %v, want %d nil", hi, err, LedgerSize)
	}
}

func TestShareGrefs(t *testing.T) {
	table := []uint32{7, 0, 9, 7}
	base := []Gref{{0, 0}, {0, 0}, {2, 1}, {0, 3}}
	child := ShareGrefs(table, base)
	if want := []Gref{{0, 1}, {0, 0}, {2, 2}, {0, 4}}; !slices.Equal(base, want) {
		t.Errorf("base %v, want %v", base, want)
	}
	if want := []Gref{{1, 0}, {0, 0}, {3, 0}, {1, 0}}; !slices.Equal(child, want) {
		t.Errorf("child %v, want %v", child, want)
	}
	if got := DecodeGrefs(EncodeGrefs(base)); !slices.Equal(got, base) {
		t.Errorf("round trip %v, want %v", got, base)
	}
	if b := EncodeGrefs([]Gref{{-1, 2}}); !slices.Equal(b, []byte{0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0}) {
		t.Errorf("encoding %x", b)
	}
}

// TestLedgerZeroExactlyAtLastDrop grows random trees of references to one
// object (snapshots and clones copy a reference, ShareGrefs), drops them
// in random order, and checks that the ledger is zero after the last drop
// and not before; and that applying only some of the drops (a replica
// that missed the others) never gives zero while a reference is left.
func TestLedgerZeroExactlyAtLastDrop(t *testing.T) {
	type ref struct{ g Gref }
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		refs := []*ref{{}} // the object's own reference, generation 0
		for n := rng.IntN(12); n > 0; n-- {
			p := refs[rng.IntN(len(refs))]
			gs := []Gref{p.g}
			child := ShareGrefs([]uint32{1}, gs)
			p.g = gs[0]
			refs = append(refs, &ref{g: child[0]})
		}
		// Every copy exists before the drops start, so any order of
		// drops is a possible history.
		rng.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
		full := make([]byte, LedgerSize)
		part := make([]byte, LedgerSize)
		fullFresh, partFresh, missed := true, true, false
		for i, r := range refs {
			zero, _, _, err := LedgerDecref(full, fullFresh, uint32(r.g.Generation), uint32(r.g.Count))
			if err != nil {
				t.Fatal(err)
			}
			fullFresh = false
			if last := i == len(refs)-1; zero != last {
				t.Fatalf("round %d: zero %v after drop %d of %d", round, zero, i+1, len(refs))
			}
			if rng.IntN(3) == 0 {
				missed = true // this replica missed the drop
				continue
			}
			zero, _, _, err = LedgerDecref(part, partFresh, uint32(r.g.Generation), uint32(r.g.Count))
			if err != nil {
				t.Fatal(err)
			}
			partFresh = false
			if zero && (missed || i != len(refs)-1) {
				t.Fatalf("round %d: a replica missing drops is zero after drop %d of %d", round, i+1, len(refs))
			}
		}
	}
}
