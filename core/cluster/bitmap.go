package cluster

import (
	"encoding/binary"
	"math/bits"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// bitmap is a 2^24-bit set laid out as Sheepdog's (unsigned long words,
// little-endian), so bytes() is exactly the READ_VDIS payload.
type bitmap []uint64

func newBitmap() bitmap { return make(bitmap, proto.NrVdis/64) }

func (b bitmap) get(v uint32) bool { return v < proto.NrVdis && b[v/64]&(1<<(v%64)) != 0 }
func (b bitmap) set(v uint32)      { b[v/64] |= 1 << (v % 64) }
func (b bitmap) clear(v uint32)    { b[v/64] &^= 1 << (v % 64) }

func (b bitmap) clone() bitmap { return append(bitmap(nil), b...) }

// firstClear returns the first clear bit ≥ from, or proto.NrVdis.
func (b bitmap) firstClear(from uint32) uint32 {
	for w := from / 64; w < uint32(len(b)); w++ {
		word := ^b[w]
		if w == from/64 {
			word &= ^uint64(0) << (from % 64)
		}
		if word != 0 {
			return w*64 + uint32(bits.TrailingZeros64(word))
		}
	}
	return proto.NrVdis
}

func (b bitmap) bytes() []byte {
	out := make([]byte, len(b)*8)
	for i, w := range b {
		if w != 0 {
			binary.LittleEndian.PutUint64(out[i*8:], w)
		}
	}
	return out
}
