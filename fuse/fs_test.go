package fuse

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
)

// TestParseTarget: a line written to vdi/mount must be usable as a file
// name; what it names follows proto.VdiRefReadings (tested there), the
// first reading tried being the snapshot one.
func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in    string
		first proto.VdiRef
		bad   bool
	}{
		{in: "Alice", first: proto.VdiRef{Name: "Alice"}},
		{in: "Alice:1", first: proto.VdiRef{Name: "Alice", SnapID: 1}},
		{in: "Alice:4294967295", first: proto.VdiRef{Name: "Alice", SnapID: 1<<32 - 1}},
		{in: "Alice:snap1", first: proto.VdiRef{Name: "Alice", Tag: "snap1"}},
		{in: "a:b:2", first: proto.VdiRef{Name: "a", Tag: "b:2"}},
		{in: "Alice:0", first: proto.VdiRef{Name: "Alice:0"}},
		{in: "Alice:", first: proto.VdiRef{Name: "Alice:"}},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "..", bad: true},
		{in: "a/b", bad: true},
		{in: "a\x00b", bad: true},
		{in: strings.Repeat("x", 256), bad: true},
		{in: strings.Repeat("x", 255), first: proto.VdiRef{Name: strings.Repeat("x", 255)}},
		{in: "a:" + strings.Repeat("t", 256), bad: true},
	} {
		got, err := parseTarget(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseTarget(%.30q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || len(got) == 0 || got[0] != tc.first {
			t.Errorf("parseTarget(%.30q) = %+v, %v; want %+v first", tc.in, got, err, tc.first)
		}
	}
}

func TestSeek(t *testing.T) {
	const obj = 4
	// 6 objects, size 22 (the last object is partial): D H H D D H
	alloc := map[uint32]bool{0: true, 3: true, 4: true}
	allocated := func(idx uint32) bool { return alloc[idx] }
	for _, tc := range []struct {
		off    int64
		data   bool
		want   int64
		wantOK bool
	}{
		{0, true, 0, true},
		{2, true, 2, true},
		{4, true, 12, true},
		{13, true, 13, true},
		{20, true, 0, false}, // only a hole follows
		{22, true, 0, false}, // at the end
		{-1, true, 0, false},
		{0, false, 4, true},
		{5, false, 5, true},
		{12, false, 20, true},
		{21, false, 21, true},
		{22, false, 0, false},
	} {
		got, ok := seek(tc.off, 22, obj, allocated, tc.data)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("seek(%d, data=%v) = %d, %v; want %d, %v", tc.off, tc.data, got, ok, tc.want, tc.wantOK)
		}
	}
	// Fully allocated: SEEK_HOLE finds the end.
	if got, ok := seek(3, 8, obj, func(uint32) bool { return true }, false); got != 8 || !ok {
		t.Errorf("seek hole in a full VDI = %d, %v; want 8, true", got, ok)
	}
}

func TestErrnos(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("read 00000001: %w", err) }
	for _, tc := range []struct {
		err     error
		io, ctl syscall.Errno
	}{
		{nil, 0, 0},
		{volume.ErrReadOnly, syscall.EROFS, syscall.EROFS},
		{wrap(proto.ResReadonly), syscall.EROFS, syscall.EROFS},
		{wrap(proto.ResNoSpace), syscall.ENOSPC, syscall.ENOSPC},
		{wrap(proto.ResInvalidParms), syscall.EINVAL, syscall.EINVAL},
		{wrap(proto.ResNoObj), syscall.EIO, syscall.ENOENT},
		{wrap(proto.ResNoVdi), syscall.EIO, syscall.ENOENT},
		{wrap(proto.ResNoTag), syscall.EIO, syscall.ENOENT},
		{wrap(proto.ResVdiLocked), syscall.EIO, syscall.EBUSY},
		{wrap(proto.ResEIO), syscall.EIO, syscall.EIO},
		{wrap(client.ErrClosed), syscall.EIO, syscall.EIO},
		{wrap(context.DeadlineExceeded), syscall.EIO, syscall.ETIMEDOUT},
		{fmt.Errorf("connect to x: %w", syscall.ECONNREFUSED), syscall.EIO, syscall.ECONNREFUSED},
		{errors.New("something else"), syscall.EIO, syscall.EIO},
	} {
		if got := ioErrno(tc.err); got != tc.io {
			t.Errorf("ioErrno(%v) = %v, want %v", tc.err, got, tc.io)
		}
		if got := ctlErrno(tc.err); got != tc.ctl {
			t.Errorf("ctlErrno(%v) = %v, want %v", tc.err, got, tc.ctl)
		}
	}
}

func TestTagLinks(t *testing.T) {
	snaps := []vdiInfo{
		{SnapID: 1, Tag: "daily"},
		{SnapID: 2, Tag: ""},
		{SnapID: 3, Tag: "7"},   // all digits: would shadow an id
		{SnapID: 4, Tag: "a/b"}, // not a file name
		{SnapID: 5, Tag: "dup"},
		{SnapID: 6, Tag: "dup"}, // ambiguous
		{SnapID: 7, Tag: "weekly"},
	}
	got := tagLinks(snaps)
	want := map[string]uint32{"daily": 1, "weekly": 7}
	if len(got) != len(want) {
		t.Fatalf("tagLinks = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("tagLinks[%q] = %d, want %d", k, got[k], v)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:         "/mnt/plain",
		`/mnt/with\040space`: "/mnt/with space",
		`/mnt/tab\011x`:      "/mnt/tab\tx",
		`/mnt/back\134slash`: `/mnt/back\slash`,
		`/mnt/trailing\04`:   `/mnt/trailing\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	if got, err := CheckMountpoint(dir); err != nil || got != dir {
		t.Errorf("CheckMountpoint(%s) = %q, %v", dir, got, err)
	}
	if _, err := CheckMountpoint(dir + "/missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing mount point: %v", err)
	}
	if _, err := CheckMountpoint("/proc"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("/proc as mount point: %v", err)
	}
}
