package erasure

// StripeSize is SD_EC_DATA_STRIPE_SIZE: data is coded in 512-byte stripes,
// each cut into d strips of StripeSize/d bytes. Strip i of every stripe of
// an object is stored contiguously, as the object's strip i (a file of
// object_size/d bytes on the i-th node in placement order).
const StripeSize = 512

// MaxStrips is the most strips an object has: d+p of the widest policy
// (16:15, SD_MAX_COPIES).
const MaxStrips = maxCopies

// StripSize is the bytes of one stripe that one strip holds.
func (p Policy) StripSize() int { return StripeSize / p.Data() }

// StoredSize is the size of one strip file of an object of objSize bytes.
func (p Policy) StoredSize(objSize int64) int64 { return objSize / int64(p.Data()) }

// Span is the whole stripes a byte range of an object touches, and the
// matching range of every strip file.
type Span struct {
	Start, End int64 // stripes [Start, End)
	StripOff   int64 // offset in each strip file: Start × StripSize
	StripLen   int   // bytes of each strip file: (End-Start) × StripSize
}

// Bytes is the span's length in the object: whole stripes.
func (s Span) Bytes() int { return int(s.End-s.Start) * StripeSize }

// Off is the span's offset in the object.
func (s Span) Off() int64 { return s.Start * StripeSize }

// SpanOf returns the stripes that [off, off+n) of an object touches. An
// empty range touches none.
func (p Policy) SpanOf(off int64, n int) Span {
	start := off / StripeSize
	end := (off + int64(n) + StripeSize - 1) / StripeSize
	if n == 0 {
		end = start
	}
	ss := int64(p.StripSize())
	return Span{Start: start, End: end, StripOff: start * ss, StripLen: int((end - start) * ss)}
}

// Aligned reports whether [off, off+n) is made of whole stripes, so that a
// write needs no read of the stripes' other bytes first.
func Aligned(off int64, n int) bool { return off%StripeSize == 0 && n%StripeSize == 0 }

// Split cuts stripes (whole stripes of object bytes) into the d data
// strips: shards[j] receives strip j of every stripe, in order. Each shard
// must hold len(stripes)/d bytes.
func (p Policy) Split(stripes []byte, shards [][]byte) {
	d, ss := p.Data(), p.StripSize()
	for s, o := 0, 0; o < len(stripes); s, o = s+ss, o+StripeSize {
		for j := range d {
			copy(shards[j][s:s+ss], stripes[o+j*ss:o+(j+1)*ss])
		}
	}
}

// Join is the inverse of Split: it interleaves the d data strips back into
// stripes.
func (p Policy) Join(shards [][]byte, stripes []byte) { p.JoinAt(shards, 0, stripes) }

// JoinAt fills out with bytes [off, off+len(out)) of the stripes the d data
// strips shards hold (Join, without the bytes before off and after the
// end of out): an unaligned read needs no buffer for the whole stripes.
func (p Policy) JoinAt(shards [][]byte, off int, out []byte) {
	ss := p.StripSize()
	for n := 0; n < len(out); {
		pos := off + n
		stripe, in := pos/StripeSize, pos%StripeSize
		j, k := in/ss, in%ss
		at := stripe*ss + k
		n += copy(out[n:], shards[j][at:at+ss-k])
	}
}
