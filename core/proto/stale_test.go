package proto

import (
	"errors"
	"slices"
	"testing"
)

// TestStaleListRoundTrip: entries come back as they went, in order, and a
// reply cut inside an entry is refused.
func TestStaleListRoundTrip(t *testing.T) {
	in := []StaleEntry{{Key: 0x007c2b2500000009, Epoch: 5}, {Key: 0x807c2b2500000000, Epoch: 0}, {Key: ^uint64(0), Epoch: ^uint32(0)}}
	var b []byte
	for _, e := range in {
		b = AppendStaleEntry(b, e)
	}
	if len(b) != len(in)*StaleEntrySize {
		t.Fatalf("encoded %d bytes, want %d", len(b), len(in)*StaleEntrySize)
	}
	out, err := ParseStaleList(b)
	if err != nil || !slices.Equal(out, in) {
		t.Fatalf("ParseStaleList = %v, %v; want %v", out, err, in)
	}
	if _, err := ParseStaleList(b[:StaleEntrySize+3]); !errors.Is(err, ResInvalidParms) {
		t.Fatalf("cut reply: err %v, want INVALID_PARMS", err)
	}
}

// FuzzParseStaleList: any reply decodes or is refused, and what decodes
// encodes back to the same bytes but for the padding.
func FuzzParseStaleList(f *testing.F) {
	f.Add(AppendStaleEntry(nil, StaleEntry{Key: 1, Epoch: 2}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := ParseStaleList(b)
		if err != nil {
			return
		}
		var back []byte
		for _, e := range out {
			back = AppendStaleEntry(back, e)
		}
		for i := range out {
			if !slices.Equal(back[i*StaleEntrySize:i*StaleEntrySize+12], b[i*StaleEntrySize:i*StaleEntrySize+12]) {
				t.Fatalf("entry %d does not encode back", i)
			}
		}
	})
}
