package vdi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Offsets of struct sheepdog_vdi_attr (docs/protocol.md §3.3).
const (
	attrOffName    = 0
	attrOffTag     = 256
	attrOffCtime   = 512
	attrOffSnapID  = 520
	attrOffKey     = 528
	attrHeaderSize = 784 // up to the value
)

// AttrFlags say what GET_VDI_ATTR does with the record (the request's
// CREAT, EXCL and DEL flags).
type AttrFlags struct {
	Create, Excl, Delete bool
}

// AttrResult is GET_VDI_ATTR's reply: the attribute object is
// VidToAttrOid(Vid, AttrID), Copies its redundancy. It is filled in even
// when the operation fails, as sheep does.
type AttrResult struct {
	Vid    uint32
	AttrID uint32
	Copies uint8
}

// attrVid is where a name's attributes live: the 24-bit FNV-1a hash of the
// name (sd_hash_vdi, without the 0 → 1 of vid allocation), not the VDI's
// vid, so that attributes survive snapshots.
func attrVid(name string) uint32 {
	return uint32(proto.FNV1a([]byte(name), proto.FNV1aBasis) & (proto.NrVdis - 1))
}

// attrSlot is the slot where the probe for a record starts: FNV-1a over the
// raw name[256], tag[256], snap_id and key[256] fields of rec (whatever
// follows a NUL counts too), as sheep's hash_vdi_attr.
func attrSlot(rec []byte) uint32 {
	h := proto.FNV1a(rec[attrOffName:attrOffCtime], proto.FNV1aBasis)
	h = proto.FNV1a(rec[attrOffSnapID:attrOffSnapID+4], h)
	h = proto.FNV1a(rec[attrOffKey:attrHeaderSize], h)
	return uint32(h)
}

// cstr is field up to its first NUL, as strcmp sees it.
func cstr(field []byte) []byte {
	if i := bytes.IndexByte(field, 0); i >= 0 {
		return field[:i]
	}
	return field
}

// sameAttr compares the identifying header of two records the way sheep
// does: strcmp of name, tag and key, equality of snap_id.
func sameAttr(a, b []byte) bool {
	return bytes.Equal(cstr(a[attrOffName:attrOffTag]), cstr(b[attrOffName:attrOffTag])) &&
		bytes.Equal(cstr(a[attrOffTag:attrOffCtime]), cstr(b[attrOffTag:attrOffCtime])) &&
		bytes.Equal(a[attrOffSnapID:attrOffSnapID+4], b[attrOffSnapID:attrOffSnapID+4]) &&
		bytes.Equal(cstr(a[attrOffKey:attrHeaderSize]), cstr(b[attrOffKey:attrHeaderSize]))
}

// Attr is GET_VDI_ATTR (docs/protocol.md §4.8): rec is the request's
// sheepdog_vdi_attr, snapid the request's vdi.snapid. The VDI named by the
// record's name and tag (or snapid) must exist. Its attributes live in
// objects of the name-hash vid; the probe starts at the record's hash and
// moves up one slot per foreign record found:
//
//   - read (no flag): the matching record's slot, NO_OBJ at the first empty
//     slot;
//   - Create: write the record (with the VDI's create_time as ctime). Like
//     sheep, a non-exclusive create does not read first, so it always
//     writes the first slot;
//   - Create+Excl: VDI_EXIST when the record is there already;
//   - Delete: write one NUL over the matching record's name.
func (s *Service) Attr(ctx context.Context, rec []byte, snapid uint32, f AttrFlags) (AttrResult, error) {
	if len(rec) < attrHeaderSize || len(rec) > proto.AttrSize {
		return AttrResult{}, fmt.Errorf("vdi_attr of %d bytes: %w", len(rec), proto.ResInvalidParms)
	}
	full := make([]byte, proto.AttrSize)
	copy(full, rec)
	name := string(cstr(full[attrOffName:attrOffTag]))
	tag := string(cstr(full[attrOffTag:attrOffCtime]))
	r, err := s.lookup(ctx, name, tag, snapid)
	if err != nil {
		return AttrResult{}, err
	}
	binary.LittleEndian.PutUint64(full[attrOffCtime:], r.ino.CreateTime)

	res := AttrResult{Vid: attrVid(name), AttrID: attrSlot(full)}
	s.cluster.View(func(st *cluster.State) { res.Copies = st.Copies(res.Vid) })

	slot := make([]byte, proto.AttrSize)
	for end := res.AttrID - 1; res.AttrID != end; res.AttrID++ {
		oid := proto.VidToAttrOid(res.Vid, res.AttrID)
		var err error = proto.ResNoObj
		if f.Excl || !f.Create {
			err = s.objects.ReadObject(ctx, oid, 0, slot)
		}
		if errors.Is(err, proto.ResNoObj) && f.Create {
			if f.Excl {
				// Concurrent exclusive creates all find the slot empty:
				// the cluster log decides which one writes it.
				taken, err := s.claimAttr(ctx, oid, full)
				if err != nil {
					return res, err
				}
				if taken {
					continue // another record's slot, being written now
				}
			}
			if err := s.objects.CreateAndWrite(ctx, oid, 0, 0, full, 0); err != nil {
				return res, fmt.Errorf("write attribute %016x: %w", oid, proto.ResEIO)
			}
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if !sameAttr(slot, full) {
			continue
		}
		switch {
		case f.Excl:
			return res, fmt.Errorf("attribute %016x: %w", oid, proto.ResVdiExist)
		case f.Delete:
			err = s.objects.WriteObject(ctx, oid, attrOffName, []byte{0}, 0)
		case f.Create:
			err = s.objects.WriteObject(ctx, oid, 0, full, 0)
		}
		if err != nil {
			return res, fmt.Errorf("write attribute %016x: %w", oid, proto.ResEIO)
		}
		return res, nil
	}
	return res, fmt.Errorf("no free attribute slot for %q: %w", name, proto.ResFullVdi)
}

// claimAttr claims attribute object oid for the record rec in the cluster
// state (cluster.KindAttrClaim). It returns VDI_EXIST when the same record
// claimed it first, taken when another record did.
func (s *Service) claimAttr(ctx context.Context, oid uint64, rec []byte) (taken bool, err error) {
	res, err := s.cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindAttrClaim, Oid: oid, AttrID: attrIdentity(rec)})
	switch {
	case err != nil:
		return false, err
	case res == proto.ResSuccess:
		return false, nil
	case res == proto.ResNoObj:
		return true, nil
	case res == proto.ResVdiExist:
		return false, fmt.Errorf("attribute %016x: %w", oid, proto.ResVdiExist)
	}
	return false, fmt.Errorf("claim attribute %016x: %w", oid, res)
}

// attrIdentity names a record as sameAttr compares them: name, tag and
// key up to their NULs, and snap_id.
func attrIdentity(rec []byte) string {
	h := sha256.New()
	for _, f := range [][]byte{cstr(rec[attrOffName:attrOffTag]), cstr(rec[attrOffTag:attrOffCtime]), rec[attrOffSnapID : attrOffSnapID+4], cstr(rec[attrOffKey:attrHeaderSize])} {
		h.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(f))))
		h.Write(f)
	}
	return hex.EncodeToString(h.Sum(nil))
}
