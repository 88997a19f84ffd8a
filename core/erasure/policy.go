// Package erasure is Sheepdog's erasure coding (docs/protocol.md §7), as pure
// functions: the copy_policy byte, the strip layout of an object, and the
// Reed-Solomon code that computes parity strips and rebuilds lost ones.
// I/O (which node holds which strip) lives in core/gateway and
// core/recovery.
//
// The code is the one Sheepdog's lib/fec.c builds (zfec's systematic
// Vandermonde matrix over GF(2^8), polynomial 0x11d), run by
// github.com/klauspost/reedsolomon with that matrix: parity strips are
// byte-for-byte those an original sheep writes (zfec.go).
package erasure

import (
	"fmt"
	"strconv"
	"strings"
)

// Policy is an inode's copy_policy byte: 0 for replication, else
// (d/2)<<4 | p for d data strips and p parity strips.
type Policy uint8

// Limits of a policy (§7): d is 2, 4, 8 or 16; p is 1 to MaxParity.
const (
	MaxParity = 15
	maxCopies = 31 // SD_MAX_COPIES
)

// NewPolicy returns the policy of d data and p parity strips, or an error
// naming what is wrong.
func NewPolicy(d, p int) (Policy, error) {
	if d != 2 && d != 4 && d != 8 && d != 16 {
		return 0, fmt.Errorf("erasure code %d:%d: data strips must be 2, 4, 8 or 16", d, p)
	}
	if p < 1 || p > MaxParity {
		return 0, fmt.Errorf("erasure code %d:%d: parity strips must be 1 to %d", d, p, MaxParity)
	}
	return Policy(d/2)<<4 | Policy(p), nil
}

// Valid reports whether p is replication (0) or a policy NewPolicy makes.
func (p Policy) Valid() bool {
	if p == 0 {
		return true
	}
	_, err := NewPolicy(p.Data(), p.Parity())
	return err == nil
}

// Erasure reports whether p is erasure coding rather than replication.
func (p Policy) Erasure() bool { return p != 0 }

// Data is the number of data strips d.
func (p Policy) Data() int { return int(p>>4) * 2 }

// Parity is the number of parity strips p.
func (p Policy) Parity() int { return int(p & 0x0f) }

// Total is d+p, the inode's nr_copies for an erasure-coded VDI.
func (p Policy) Total() int { return p.Data() + p.Parity() }

// Redundancy is how dog shows a VDI's or cluster's redundancy: "n" for n
// copies, "d:p" for erasure coding.
func Redundancy(copies uint8, p Policy) string {
	if p == 0 {
		return strconv.Itoa(int(copies))
	}
	return fmt.Sprintf("%d:%d", p.Data(), p.Parity())
}

// ParseCopies is dog's -c argument (parse_copy): "n" for n replicated
// copies (1 to 31) or "d:p" for erasure coding. It returns the number of
// copies (d+p for erasure coding) and the policy; ok is false for anything
// dog refuses (then print InvalidCopies).
func ParseCopies(v string) (copies uint8, p Policy, ok bool) {
	// strtok(":"): empty fields are skipped, and a third field is ignored.
	var fields []string
	for _, f := range strings.Split(v, ":") {
		if f != "" {
			fields = append(fields, f)
		}
	}
	if len(fields) == 0 || !isNumeric(fields[0]) || len(fields) > 1 && !isNumeric(fields[1]) {
		return 0, 0, false
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n > maxCopies {
		return 0, 0, false
	}
	if len(fields) == 1 {
		return uint8(n), 0, n != 0
	}
	parity, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, false
	}
	pol, err := NewPolicy(n, parity)
	if err != nil {
		return 0, 0, false
	}
	return uint8(pol.Total()), pol, true
}

// InvalidCopies is dog's message for a -c argument ParseCopies refuses.
func InvalidCopies(arg string) string {
	return fmt.Sprintf("Invalid parameter %s\n"+
		"To create replicated vdi, set -c x\n"+
		"  x(1 to %d)   - number of replicated copies\n"+
		"To create erasure coded vdi, set -c x:y\n"+
		"  x(2,4,8,16)  - number of data strips\n"+
		"  y(1 to 15)   - number of parity strips", arg, maxCopies)
}

func isNumeric(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
