package proto

import (
	"encoding/binary"
	"fmt"
)

// Generational reference counting (§4.7, Sheepdog's doc/object-reclaim.txt).
//
// A data object shared by copy-on-write has a ledger object,
// LedgerOid(data oid): LedgerSize bytes, an array of little-endian uint32
// counters indexed by generation. An inode holds, for each data_vdi_id
// entry, a Gref {generation, count}: the generation of its reference and
// how many references were copied from it (snapshots, clones, rebases).
//
// Accounting: the object's first reference is generation 0, one reference
// in all (a missing ledger reads as ledger[0] = 1). A reference of
// generation g copied c times was the parent of c references of
// generation g+1. When it is dropped, ledger[g]-- (it is gone) and
// ledger[g+1] += c (its copies are known now). So ledger[g] is the number
// of generation-g references known minus those dropped, and the ledger is
// all zero exactly when every reference has been dropped.
//
// Invariant (why a ledger is never zero early): if the drops applied to a
// ledger are a subset S of the real drops, each applied once, then zero
// means S holds the root (ledger[0] = 1 - 1) and, generation by
// generation, as many drops as the drops of the generation before had
// copies: S is the whole tree of references. A lost drop (a replica that
// missed it) only keeps an object longer. A drop applied twice can zero a
// ledger early; the gateway therefore sends each drop to each replica at
// most once (gateway.Decref).

// LedgerSize is the size of a ledger object (SD_LEDGER_OBJ_SIZE).
const LedgerSize = 1 << 22

// LedgerEntries is the number of generation counters of a ledger.
const LedgerEntries = LedgerSize / 4

// LedgerDecref applies the drop of a reference of generation gen that was
// copied count times to the ledger image l (LedgerSize bytes; for a
// ledger that does not exist yet, zeros and fresh = true). It returns
// whether the ledger is now all zero (no reference is left: the ledger
// and its data object go) and the byte range [lo, hi) of l it changed,
// which for a fresh ledger starts at 0 (ledger[0] = 1 is part of it).
func LedgerDecref(l []byte, fresh bool, gen, count uint32) (zero bool, lo, hi int, err error) {
	if len(l) != LedgerSize {
		return false, 0, 0, fmt.Errorf("ledger of %d bytes, want %d: %w", len(l), LedgerSize, ResInvalidParms)
	}
	if gen >= LedgerEntries-1 {
		return false, 0, 0, fmt.Errorf("generation %d beyond the ledger's %d: %w", gen, LedgerEntries-1, ResInvalidParms)
	}
	le := binary.LittleEndian
	lo = 4 * int(gen)
	if fresh {
		le.PutUint32(l[0:], 1)
		lo = 0
	}
	at := 4 * int(gen)
	le.PutUint32(l[at:], le.Uint32(l[at:])-1) // uint32 arithmetic, as Sheepdog's: -1 is 0xffffffff
	le.PutUint32(l[at+4:], le.Uint32(l[at+4:])+count)
	return allZero(l), lo, at + 8, nil
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	le := binary.LittleEndian
	for len(b) >= 8 {
		if le.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ShareGrefs is the reference accounting of a snapshot, clone or rebase
// whose new inode copies the data_vdi_id table of the base: for every
// allocated entry the base's count goes up by one (gref is the base's
// table of grefs, changed in place) and the new inode's reference is one
// generation younger, copied by nobody yet. The returned grefs are the
// new inode's (len(table) entries; unallocated entries stay zero).
//
// The base's counts must be stored before the new inode exists: a new
// reference whose parent's count does not include it would be dropped
// from a ledger that never knew it (zero early).
func ShareGrefs(table []uint32, gref []Gref) []Gref {
	child := make([]Gref, len(table))
	for i, v := range table {
		if v == 0 {
			continue
		}
		gref[i].Count++
		child[i] = Gref{Generation: gref[i].Generation + 1}
	}
	return child
}

// EncodeGrefs is the inode image of grefs (8 bytes each: generation,
// count), as stored at GrefOffset + 8*index.
func EncodeGrefs(g []Gref) []byte {
	b := make([]byte, 8*len(g))
	for i, r := range g {
		binary.LittleEndian.PutUint32(b[8*i:], uint32(r.Generation))
		binary.LittleEndian.PutUint32(b[8*i+4:], uint32(r.Count))
	}
	return b
}

// DecodeGrefs is the inverse of EncodeGrefs (len(b)/8 entries).
func DecodeGrefs(b []byte) []Gref {
	g := make([]Gref, len(b)/8)
	for i := range g {
		g[i] = Gref{Generation: int32(binary.LittleEndian.Uint32(b[8*i:])), Count: int32(binary.LittleEndian.Uint32(b[8*i+4:]))}
	}
	return g
}

// GrefOff is the byte offset of gref[idx] in the inode object.
func GrefOff(idx uint32) int64 { return GrefOffset + 8*int64(idx) }
