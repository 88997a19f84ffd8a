package server

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// fakeDisks records what MD_PLUG and MD_UNPLUG asked for.
type fakeDisks struct {
	info         []md.DiskInfo
	plug, unplug [][]string
	err          error
}

func (f *fakeDisks) Info() []md.DiskInfo { return f.info }
func (f *fakeDisks) Plug(p []string) error {
	f.plug = append(f.plug, p)
	return f.err
}
func (f *fakeDisks) Unplug(p []string) error {
	f.unplug = append(f.unplug, p)
	return f.err
}

func TestMdOps(t *testing.T) {
	ctx := context.Background()
	none := &Handler{}
	if err := none.mdInfo(ctx, &call{}); !errors.Is(err, proto.ResNoSupport) {
		t.Errorf("MD_INFO without disks: %v", err)
	}
	f := &fakeDisks{info: []md.DiskInfo{{Index: 0, Path: "/d0", Free: 10, Used: 2}, {Index: 1, Path: "/d1", Free: 20}}}
	h := &Handler{cfg: Config{Disks: f}}
	c := &call{}
	if err := h.mdInfo(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := proto.UnmarshalMdInfo(c.out)
	want := []proto.MdDisk{{Index: 0, Path: "/d0", Free: 10, Used: 2}, {Index: 1, Path: "/d1", Free: 20}}
	if err != nil || len(c.out) != proto.MdInfoSize || !reflect.DeepEqual(got, want) {
		t.Errorf("MD_INFO reply: %+v, %v (%d bytes)", got, err, len(c.out))
	}

	if err := h.mdPlug(true)(ctx, &call{data: []byte("/a,/b\x00")}); err != nil {
		t.Fatal(err)
	}
	if err := h.mdPlug(false)(ctx, &call{data: []byte("/c\x00garbage")}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.plug, [][]string{{"/a", "/b"}}) || !reflect.DeepEqual(f.unplug, [][]string{{"/c"}}) {
		t.Errorf("plug %v, unplug %v", f.plug, f.unplug)
	}
	if err := h.mdPlug(true)(ctx, &call{data: []byte("\x00")}); !errors.Is(err, proto.ResInvalidParms) {
		t.Errorf("MD_PLUG without a path: %v", err)
	}
	f.err = proto.ResUnknown
	if err := h.mdPlug(false)(ctx, &call{data: []byte("/c")}); !errors.Is(err, proto.ResUnknown) {
		t.Errorf("MD_UNPLUG with no change: %v", err)
	}
}
