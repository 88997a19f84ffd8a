package vdi

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// attrRec is the record dog sends: name, tag, snap_id, key and value, ctime 0.
func attrRec(name, tag string, snapID uint32, key, value string) []byte {
	a := proto.VdiAttr{Name: name, Tag: tag, SnapID: snapID, Key: key, Value: []byte(value)}
	return a.Marshal()
}

func (e *env) readAttr(res AttrResult) proto.VdiAttr {
	e.t.Helper()
	buf := make([]byte, proto.AttrSize)
	if err := e.obj.ReadObject(e.ctx, proto.VidToAttrOid(res.Vid, res.AttrID), 0, buf); err != nil {
		e.t.Fatalf("read attribute %x/%x: %v", res.Vid, res.AttrID, err)
	}
	var a proto.VdiAttr
	if err := a.Unmarshal(buf); err != nil {
		e.t.Fatal(err)
	}
	return a
}

// TestAttrWire checks the record and the reply against the capture of
// "dog vdi setattr Alice owner alice" (testdata/dog-wire.log).
func TestAttrWire(t *testing.T) {
	rec := attrRec("Alice", "", 0, "owner", "alice")
	if sum := sha256.Sum256(rec); hex.EncodeToString(sum[:]) != "ef7c62849b63e2e9b12661e68df078f5236399aa10f3b1428cb5ad17c8c45690" {
		t.Fatalf("setattr record differs from dog's: sha256 %x", sum)
	}
	e := newEnv(t, 0)
	e.create("Alice", 4<<20)
	res, err := e.svc.Attr(e.ctx, rec, 0, AttrFlags{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Vid != hashAlice || res.AttrID != 0xe2be9a94 || res.Copies != 3 {
		t.Fatalf("reply vid %x attr_id %x copies %d, want 15d167 e2be9a94 3", res.Vid, res.AttrID, res.Copies)
	}
	if got := proto.AttrHash("Alice", "", 0, "owner"); got != res.AttrID {
		t.Errorf("proto.AttrHash = %x, slot %x", got, res.AttrID)
	}
	a := e.readAttr(res)
	if a.Key != "owner" || string(a.Value) != "alice" || a.Ctime != e.inode(hashAlice).CreateTime {
		t.Errorf("stored record %+v", a)
	}
}

func TestAttrLifecycle(t *testing.T) {
	e := newEnv(t, 0)
	vid := e.create("disk", 4<<20)
	get := func(key string) (AttrResult, error) {
		return e.svc.Attr(e.ctx, attrRec("disk", "", 0, key, ""), 0, AttrFlags{})
	}
	set := func(key, value string, f AttrFlags) (AttrResult, error) {
		f.Create = !f.Delete
		return e.svc.Attr(e.ctx, attrRec("disk", "", 0, key, value), 0, f)
	}

	_, err := get("owner")
	wantErr(t, "get before set", err, proto.ResNoObj)
	first, err := set("owner", "alice", AttrFlags{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := get("owner")
	if err != nil || res != first {
		t.Fatalf("get: %+v %v, want %+v", res, err, first)
	}
	_, err = set("owner", "bob", AttrFlags{Excl: true})
	wantErr(t, "exclusive set of an existing key", err, proto.ResVdiExist)
	if _, err := set("owner", "carol", AttrFlags{}); err != nil {
		t.Fatal(err)
	}
	if v := string(e.readAttr(first).Value); v != "carol" {
		t.Errorf("overwritten value %q", v)
	}

	// Attributes belong to the name: they survive a snapshot, whose new
	// working VDI has another vid.
	if w, _ := e.snapshot("disk", ""); w == vid {
		t.Fatal("snapshot kept the vid")
	}
	if res, err := get("owner"); err != nil || res != first {
		t.Fatalf("get after snapshot: %+v %v", res, err)
	}

	// A foreign record in a key's first slot: the exclusive create probes
	// to the next slot, and reads find it there.
	other, err := set("other", "x", AttrFlags{})
	if err != nil {
		t.Fatal(err)
	}
	foreign := attrRec("disk", "", 0, "squatter", "")
	if err := e.obj.CreateAndWrite(e.ctx, proto.VidToAttrOid(other.Vid, other.AttrID+1), 0, 0, foreign, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := set("other", "", AttrFlags{Delete: true}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = get("other")
	wantErr(t, "get after delete", err, proto.ResNoObj)
	moved, err := set("other", "y", AttrFlags{Excl: true})
	if err != nil || moved.AttrID != other.AttrID+2 {
		t.Fatalf("exclusive create after a deleted and a foreign slot: %+v %v, want slot %x", moved, err, other.AttrID+2)
	}
	if res, err := get("other"); err != nil || res.AttrID != moved.AttrID {
		t.Fatalf("get of the probed slot: %+v %v", res, err)
	}

	// The VDI must exist; a snapshot is named by its id.
	_, err = e.svc.Attr(e.ctx, attrRec("nope", "", 0, "k", "v"), 0, AttrFlags{Create: true})
	wantErr(t, "attribute of an unknown VDI", err, proto.ResNoVdi)
	if _, err := e.svc.Attr(e.ctx, attrRec("disk", "", 1, "k", "snap"), 1, AttrFlags{Create: true}); err != nil {
		t.Fatalf("attribute of snapshot 1: %v", err)
	}
	_, err = e.svc.Attr(e.ctx, attrRec("disk", "", 9, "k", "v"), 9, AttrFlags{Create: true})
	wantErr(t, "attribute of a missing snapshot", err, proto.ResNoTag)
	_, err = e.svc.Attr(e.ctx, make([]byte, 100), 0, AttrFlags{})
	wantErr(t, "short record", err, proto.ResInvalidParms)
}

// TestAttrExclusiveRace: concurrent exclusive creates of one record all
// find its slot empty; the cluster log lets exactly one of them write it,
// the others get VDI_EXIST. A different record probing into the claimed
// slot moves on to the next one.
func TestAttrExclusiveRace(t *testing.T) {
	e := newEnv(t, 0)
	e.create("disk", 4<<20)
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.svc.Attr(e.ctx, attrRec("disk", "", 0, "owner", string(rune('a'+i))), 0, AttrFlags{Create: true, Excl: true})
			errs <- err
		}()
	}
	won := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			won++
		case proto.ResultOf(err) != proto.ResVdiExist:
			t.Fatalf("exclusive create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d exclusive creates succeeded, want 1", won, n)
	}
	res, err := e.svc.Attr(e.ctx, attrRec("disk", "", 0, "owner", ""), 0, AttrFlags{})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.readAttr(res); a.Key != "owner" || len(a.Value) != 1 {
		t.Fatalf("stored record %+v", a)
	}
}
