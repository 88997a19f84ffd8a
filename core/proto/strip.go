package proto

import (
	"fmt"
	"strconv"
	"strings"
)

// Strip keys. A node's store holds one file per object, "%016x", and for an
// erasure-coded object the strip it holds, "%016x_<ec_index>" (§3.4, §7).
// Inside this program the store names both by one uint64 key: an object by
// its oid, a strip by StripKey(oid, index).
//
// Invariant that makes the keys unambiguous: no object id sets bit 58 (it is
// reserved, §3.1), and the objects that are erasure coded (data and vmstate;
// see IsErasureOid) never set bits 59, 60 or 63. A strip key sets bit 58 and
// spreads its 5-bit index over bits 56, 57, 59, 60 and 63.
const (
	stripMark uint64 = 1 << 58
	stripMask uint64 = 1<<56 | 1<<57 | stripMark | 1<<59 | 1<<60 | 1<<63
	// MaxStrips bounds an ec_index: d+p <= MaxCopies.
	MaxStrips = MaxCopies
)

// StripKey is the store key of strip index of the erasure-coded object oid.
func StripKey(oid uint64, index int) uint64 {
	i := uint64(index)
	return oid | stripMark | (i&3)<<56 | (i>>2&1)<<59 | (i>>3&1)<<60 | (i>>4&1)<<63
}

// SplitKey returns the object and strip index of a store key; strip is
// false (and index 0) for a whole object.
func SplitKey(key uint64) (oid uint64, index int, strip bool) {
	if key&stripMark == 0 {
		return key, 0, false
	}
	i := key>>56&3 | (key>>59&1)<<2 | (key>>60&1)<<3 | (key>>63&1)<<4
	return key &^ stripMask, int(i), true
}

// ObjectName is the file name of a store key, as sheep names it:
// "%016x" for an object, "%016x_%d" for a strip.
func ObjectName(key uint64) string {
	if oid, i, ok := SplitKey(key); ok {
		return fmt.Sprintf("%016x_%d", oid, i)
	}
	return fmt.Sprintf("%016x", key)
}

// ParseObjectName is the inverse of ObjectName: exactly 16 hex digits (an
// id without bit 58), optionally followed by "_" and a strip index below
// MaxStrips, spelled without leading zeros.
func ParseObjectName(name string) (uint64, bool) {
	hex, idx, strip := strings.Cut(name, "_")
	if len(hex) != 16 {
		return 0, false
	}
	oid, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, false
	}
	if !strip {
		// A plain name with bit 58 set would read as a strip key: no
		// object id sets it.
		return oid, oid&stripMark == 0
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i >= MaxStrips || strconv.Itoa(i) != idx || !IsErasureOid(oid) {
		return 0, false
	}
	return StripKey(oid, i), true
}

// IsErasureOid reports whether oid is of a kind that a VDI with an
// erasure-coding copy policy stores as strips: data and vmstate objects.
// Inode, B-tree and ledger objects are always replicas (§7); attribute
// objects are replicas here too, because their size (66320 bytes) is not a
// whole number of 512-byte stripes.
func IsErasureOid(oid uint64) bool {
	return oid&(VdiBit|VdiAttrBit|VdiBtreeBit|LedgerBit|stripMask) == 0
}
