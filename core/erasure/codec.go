package erasure

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Codec computes parity strips and rebuilds lost strips for one policy.
// Strips are coded byte by byte, so a run of whole stripes is coded in one
// call over the strips' contiguous bytes (as stored in the strip files),
// with the same result as coding each stripe on its own.
//
// A Codec is safe for concurrent use.
type Codec struct {
	policy Policy
	enc    reedsolomon.Encoder
}

var codecs sync.Map // Policy -> *Codec

// CodecFor returns the (shared) codec of policy p, which must be an
// erasure-coding policy.
func CodecFor(p Policy) (*Codec, error) {
	if c, ok := codecs.Load(p); ok {
		return c.(*Codec), nil
	}
	if !p.Erasure() || !p.Valid() {
		return nil, fmt.Errorf("copy policy %#x is not an erasure code", uint8(p))
	}
	enc, err := reedsolomon.New(p.Data(), p.Parity(), reedsolomon.WithCustomMatrix(parityRows(p.Data(), p.Parity())))
	if err != nil {
		return nil, fmt.Errorf("erasure code %d:%d: %w", p.Data(), p.Parity(), err)
	}
	c, _ := codecs.LoadOrStore(p, &Codec{policy: p, enc: enc})
	return c.(*Codec), nil
}

// Policy is the codec's policy.
func (c *Codec) Policy() Policy { return c.policy }

// Encode fills the parity strips shards[d:] from the data strips
// shards[:d]. Every shard has the same length.
func (c *Codec) Encode(shards [][]byte) error { return c.enc.Encode(shards) }

// ErrTooFewStrips is returned when fewer than d strips are present.
var ErrTooFewStrips = reedsolomon.ErrTooFewShards

// Reconstruct rebuilds the missing strips (nil or empty entries) of
// shards, all d+p of them, from any d present ones. With dataOnly it
// rebuilds only missing data strips. A missing entry with capacity for a
// strip is filled in place.
func (c *Codec) Reconstruct(shards [][]byte, dataOnly bool) error {
	var err error
	if dataOnly {
		err = c.enc.ReconstructData(shards)
	} else {
		err = c.enc.Reconstruct(shards)
	}
	if errors.Is(err, reedsolomon.ErrTooFewShards) {
		return fmt.Errorf("erasure code %d:%d: fewer than %d strips left: %w", c.policy.Data(), c.policy.Parity(), c.policy.Data(), ErrTooFewStrips)
	}
	return err
}

// RebuildOne rebuilds strip i of shards (empty; filled in place when it
// has room for a strip) from any d present ones, leaving the other
// missing strips missing.
func (c *Codec) RebuildOne(shards [][]byte, i int) error {
	required := make([]bool, len(shards))
	required[i] = true
	err := c.enc.ReconstructSome(shards, required)
	if errors.Is(err, reedsolomon.ErrTooFewShards) {
		return fmt.Errorf("erasure code %d:%d: fewer than %d strips left: %w", c.policy.Data(), c.policy.Parity(), c.policy.Data(), ErrTooFewStrips)
	}
	return err
}

// Verify reports whether the parity strips match the data strips.
func (c *Codec) Verify(shards [][]byte) (bool, error) { return c.enc.Verify(shards) }

// EncodeStripes splits whole stripes of object bytes into d data strips
// and computes the p parity strips: out[i] (len(stripes)/d bytes each, all
// d+p of them) receives strip i.
func (c *Codec) EncodeStripes(stripes []byte, out [][]byte) error {
	if len(stripes)%StripeSize != 0 {
		return fmt.Errorf("erasure: %d bytes are not whole stripes", len(stripes))
	}
	c.policy.Split(stripes, out[:c.policy.Data()])
	return c.Encode(out)
}
