// Package bufpool pools byte buffers by power-of-two size class, so that
// a data path (the protocol server's payloads, NBD's) takes and returns
// buffers without allocating per request.
//
// Buffers travel as *[]byte: putting a plain slice into a sync.Pool
// allocates its header on every Put.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	// MinClass is the smallest class: every buffer has room for at least
	// 1<<MinClass bytes.
	MinClass = 12
	// MaxClass is the largest pooled class (1 GiB). Larger buffers are
	// allocated and dropped, never pooled.
	MaxClass = 30
)

var pools [MaxClass - MinClass + 1]sync.Pool

// class is the size class of an n-byte buffer: the smallest c >= MinClass
// with 1<<c >= n.
func class(n int) int {
	if n <= 1<<MinClass {
		return MinClass
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n, with capacity 1<<class(n) (exactly n
// beyond MaxClass). Its contents are arbitrary. Give it back with Put
// when no reference to it is left.
func Get(n int) *[]byte {
	c := class(n)
	if c > MaxClass {
		b := make([]byte, n)
		return &b
	}
	if b, ok := pools[c-MinClass].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put returns b to its pool. Buffers whose capacity is not a pooled class
// (not from Get, or larger than 1<<MaxClass) are dropped.
func Put(b *[]byte) {
	n := cap(*b)
	c := class(n)
	if n != 1<<c || c > MaxClass {
		return
	}
	pools[c-MinClass].Put(b)
}
