package proto

import "strconv"

// VdiRef names a VDI the way users write one: the working VDI NAME, or
// one of its snapshots as NAME:SNAPID or NAME:TAG. The NBD export names
// and sheepfs's volume names both follow it (docs/qemu-client.md §7).
type VdiRef struct {
	Name   string
	Tag    string // non-empty: the snapshot with this tag
	SnapID uint32 // non-zero: the snapshot with this id
}

// Snapshot reports whether r names a snapshot rather than the working VDI.
func (r VdiRef) Snapshot() bool { return r.Tag != "" || r.SnapID != 0 }

// String is the text form VdiRefReadings reads back: NAME, NAME:SNAPID or
// NAME:TAG.
func (r VdiRef) String() string {
	switch {
	case r.SnapID != 0:
		return r.Name + ":" + strconv.FormatUint(uint64(r.SnapID), 10)
	case r.Tag != "":
		return r.Name + ":" + r.Tag
	}
	return r.Name
}

// VdiRefReadings lists the VDIs text can name, in the order a front-end
// tries them (the first that exists wins). The rule, QEMU's for its
// sheepdog:NAME:SNAPSHOT filenames:
//
//   - At each colon, from the left, with text on both sides: NAME before
//     it, and after it a snapshot id when it is a decimal number in
//     1..2^32-1, a tag when it is not a number at all (a number out of
//     range, or 0, names no snapshot). A tag may hold colons, and so may a
//     name; trying every colon finds either.
//   - Last, the whole text as the name of a working VDI.
//
// Readings whose name or tag does not fit its wire field (MaxVdiLen,
// MaxVdiTagLen, NUL included) are left out, so the list may be empty.
func VdiRefReadings(text string) []VdiRef {
	var refs []VdiRef
	add := func(r VdiRef) {
		if r.Name != "" && len(r.Name) < MaxVdiLen && len(r.Tag) < MaxVdiTagLen {
			refs = append(refs, r)
		}
	}
	for i := 0; i < len(text); i++ {
		if text[i] != ':' {
			continue
		}
		name, rest := text[:i], text[i+1:]
		if name == "" || rest == "" {
			continue
		}
		if !isDecimal(rest) {
			add(VdiRef{Name: name, Tag: rest})
		} else if n, err := strconv.ParseUint(rest, 10, 32); err == nil && n != 0 {
			add(VdiRef{Name: name, SnapID: uint32(n)})
		}
	}
	add(VdiRef{Name: text})
	return refs
}

func isDecimal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
