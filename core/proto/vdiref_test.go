package proto

import (
	"reflect"
	"strings"
	"testing"
)

// TestVdiRefReadings pins the one rule by which NBD export names and
// sheepfs volume names name a VDI or snapshot.
func TestVdiRefReadings(t *testing.T) {
	long := strings.Repeat("x", MaxVdiLen-1)
	for _, tt := range []struct {
		text string
		want []VdiRef
	}{
		{"Alice", []VdiRef{{Name: "Alice"}}},
		{"Alice:1", []VdiRef{{Name: "Alice", SnapID: 1}, {Name: "Alice:1"}}},
		{"Alice:4294967295", []VdiRef{{Name: "Alice", SnapID: 1<<32 - 1}, {Name: "Alice:4294967295"}}},
		{"Alice:daily", []VdiRef{{Name: "Alice", Tag: "daily"}, {Name: "Alice:daily"}}},
		{"Alice:snap1", []VdiRef{{Name: "Alice", Tag: "snap1"}, {Name: "Alice:snap1"}}},
		// Snap id 0 is the working VDI's, never a snapshot's; a number out
		// of range names no snapshot either, and neither is a tag.
		{"Alice:0", []VdiRef{{Name: "Alice:0"}}},
		{"v:4294967296", []VdiRef{{Name: "v:4294967296"}}},
		{"v:99999999999", []VdiRef{{Name: "v:99999999999"}}},
		// A tag with a colon, or a name with one: every split is tried,
		// leftmost first.
		{"a:b:7", []VdiRef{{Name: "a", Tag: "b:7"}, {Name: "a:b", SnapID: 7}, {Name: "a:b:7"}}},
		{"a:b:tag", []VdiRef{{Name: "a", Tag: "b:tag"}, {Name: "a:b", Tag: "tag"}, {Name: "a:b:tag"}}},
		{"a:1:2", []VdiRef{{Name: "a", Tag: "1:2"}, {Name: "a:1", SnapID: 2}, {Name: "a:1:2"}}},
		{":x", []VdiRef{{Name: ":x"}}},
		{"x:", []VdiRef{{Name: "x:"}}},
		{"", nil},
		// Fields that do not fit the wire are no reading.
		{long, []VdiRef{{Name: long}}},
		{long + "x", nil},
		{long + "x:2", nil},
		{"a:" + strings.Repeat("t", MaxVdiTagLen), nil},
		{"a:" + strings.Repeat("t", MaxVdiTagLen-1), []VdiRef{{Name: "a", Tag: strings.Repeat("t", MaxVdiTagLen-1)}}},
	} {
		got := VdiRefReadings(tt.text)
		if len(got) == 0 && len(tt.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("VdiRefReadings(%.40q) = %+v, want %+v", tt.text, got, tt.want)
		}
	}
}

// TestVdiRefString: every reading prints as text that reads back to it
// first among the snapshot readings of that split.
func TestVdiRefString(t *testing.T) {
	for _, r := range []VdiRef{{Name: "Alice"}, {Name: "Alice", SnapID: 3}, {Name: "Alice", Tag: "daily"}, {Name: "a", Tag: "b:c"}} {
		got := VdiRefReadings(r.String())
		if len(got) == 0 || got[0] != r {
			t.Errorf("%+v prints as %q, which reads first as %+v", r, r.String(), got)
		}
		if r.Snapshot() != (r.SnapID != 0 || r.Tag != "") {
			t.Errorf("%+v.Snapshot() = %v", r, r.Snapshot())
		}
	}
}
