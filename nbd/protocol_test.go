package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func TestExtents(t *testing.T) {
	const obj = 4 << 20
	alloc := func(set ...uint32) func(uint32) bool {
		return func(i uint32) bool {
			for _, s := range set {
				if s == i {
					return true
				}
			}
			return false
		}
	}
	hz := stateHole | stateZero
	tests := []struct {
		name  string
		off   uint64
		n     uint32
		alloc func(uint32) bool
		one   bool
		want  []extent
	}{
		{"all hole merges", 0, 3 * obj, alloc(), false, []extent{{3 * obj, hz}}},
		{"all data merges", 0, 2 * obj, alloc(0, 1), false, []extent{{2 * obj, 0}}},
		{"mixed", 0, 4 * obj, alloc(1, 2), false, []extent{{obj, hz}, {2 * obj, 0}, {obj, hz}}},
		{"unaligned start and end", obj / 2, obj + 100, alloc(1), false, []extent{{obj / 2, hz}, {obj/2 + 100, 0}}},
		{"inside one object", 10, 20, alloc(0), false, []extent{{20, 0}}},
		{"req one stops at the first change", 0, 4 * obj, alloc(2), true, []extent{{2 * obj, hz}}},
		{"req one over a uniform range", 0, 2 * obj, alloc(), true, []extent{{2 * obj, hz}}},
		{"parent-owned objects are data", obj, obj, alloc(1), false, []extent{{obj, 0}}},
	}
	for _, tt := range tests {
		got := extents(tt.off, tt.n, obj, tt.alloc, tt.one)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
		var sum uint64
		for _, e := range got {
			sum += uint64(e.length)
		}
		if sum > uint64(tt.n) {
			t.Errorf("%s: extents cover %d bytes, more than the %d asked", tt.name, sum, tt.n)
		}
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

func TestParseInfoRequest(t *testing.T) {
	name, infos, err := parseInfoRequest(infoData("Alice:1", infoName, infoBlockSize))
	if err != nil || name != "Alice:1" || !reflect.DeepEqual(infos, []uint16{infoName, infoBlockSize}) {
		t.Fatalf("got %q %v %v", name, infos, err)
	}
	if name, infos, err := parseInfoRequest(infoData("")); err != nil || name != "" || len(infos) != 0 {
		t.Fatalf("empty: got %q %v %v", name, infos, err)
	}
	bad := [][]byte{
		nil,
		{0, 0, 0},
		{0, 0, 0, 9, 'a'},                // name longer than the data
		{0, 0, 0, 1, 'a', 0, 2, 0, 1},    // two infos announced, one sent
		{0, 0, 0, 1, 'a', 0, 0, 0},       // trailing byte
		{0xff, 0xff, 0xff, 0xff, 0, 0},   // length overflow
		append(infoData("x"), 0, 3, 0x9), // junk after the list
	}
	for _, b := range bad {
		if _, _, err := parseInfoRequest(b); err == nil {
			t.Errorf("parseInfoRequest(%x) accepted", b)
		}
	}
}

func TestParseMetaRequest(t *testing.T) {
	name, qs, err := parseMetaRequest(metaData("Alice", "base:allocation", "qemu:dirty-bitmap:x"))
	if err != nil || name != "Alice" || !reflect.DeepEqual(qs, []string{"base:allocation", "qemu:dirty-bitmap:x"}) {
		t.Fatalf("got %q %v %v", name, qs, err)
	}
	bad := [][]byte{
		nil,
		{0, 0, 0, 0, 0, 0, 0},
		{0, 0, 0, 0, 0, 0, 0, 1}, // one query announced, none sent
		{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 'b'},   // query longer than the data
		append(metaData("x", "base:allocation"), 1), // trailing byte
		{0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0},
	}
	for _, b := range bad {
		if _, _, err := parseMetaRequest(b); err == nil {
			t.Errorf("parseMetaRequest(%x) accepted", b)
		}
	}
}

func TestMatchContexts(t *testing.T) {
	tests := []struct {
		queries []string
		list    bool
		want    []string
	}{
		{nil, true, []string{baseAllocation}},
		{nil, false, nil},
		{[]string{"base:"}, true, []string{baseAllocation}},
		{[]string{"base:"}, false, nil},
		{[]string{"base:allocation"}, false, []string{baseAllocation}},
		{[]string{"qemu:dirty-bitmap:a", "base:allocation"}, false, []string{baseAllocation}},
		{[]string{"qemu:dirty-bitmap:a"}, true, nil},
	}
	for _, tt := range tests {
		if got := matchContexts(tt.queries, tt.list); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("matchContexts(%q, list=%v) = %q, want %q", tt.queries, tt.list, got, tt.want)
		}
	}
}

func TestErrnoOf(t *testing.T) {
	tests := []struct {
		err  error
		want uint32
	}{
		{fmt.Errorf("write: %w", proto.ResReadonly), errPerm},
		{fmt.Errorf("x: %w", proto.ResInvalidParms), errInval},
		{fmt.Errorf("x: %w", proto.ResNoSpace), errNoSpc},
		{proto.ResEIO, errIO},
		{proto.ResNoObj, errIO},
		{errors.New("disk on fire"), errIO},
	}
	for _, tt := range tests {
		if got := errnoOf(tt.err); got != tt.want {
			t.Errorf("errnoOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestSizeClasses(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, maxPayload} {
		b := getBuf(n)
		if len(*b) != n || cap(*b) < n || cap(*b)&(cap(*b)-1) != 0 {
			t.Fatalf("getBuf(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		putBuf(b)
	}
}
