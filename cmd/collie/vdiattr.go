package main

import (
	"bytes"
	"errors"
	"io"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// attrFlags say what findAttr asks of GET_VDI_ATTR.
type attrFlags struct{ create, excl, del bool }

// truncate cuts s to n-1 bytes, as pstrcpy into an n-byte field does.
func truncate(s string, n int) string {
	if len(s) >= n {
		return s[:n-1]
	}
	return s
}

// findAttr is dog's find_vdi_attr_oid: GET_VDI_ATTR with a full
// sheepdog_vdi_attr record. It returns the attribute object's id and the
// result code.
func (s *session) findAttr(name, key string, value []byte, f attrFlags) (uint64, proto.Result, error) {
	o := s.opts
	rec := proto.VdiAttr{Name: truncate(name, proto.MaxVdiLen), Tag: truncate(o.snapTag, proto.MaxVdiTagLen),
		SnapID: o.snapID, Key: truncate(key, proto.AttrKeyLen), Value: value}
	req := proto.NewRequest(proto.OpGetVdiAttr)
	if f.create {
		req.Flags |= proto.FlagCmdCreat
	}
	if f.excl {
		req.Flags |= proto.FlagCmdExcl
	}
	if f.del {
		req.Flags |= proto.FlagCmdDel
	}
	req.SetVdi(proto.VdiArgs{SnapID: o.snapID})
	rsp, _, err := s.do(&req, rec.Marshal(), nil)
	if err != nil {
		return 0, 0, err
	}
	v := rsp.Vdi()
	return proto.VidToAttrOid(v.VdiID, v.AttrID), rsp.Result, nil
}

// cValue is a value as C's strlen sees it: up to the first NUL.
func cValue(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func vdiSetattr(s *session, args []string) error {
	name := args[0]
	if len(args) < 2 {
		return usagef("Please specify the attribute key")
	}
	key := args[1]
	del := s.opts.snap.delete
	var value []byte
	switch {
	case len(args) > 2:
		value = []byte(args[2])
	case !del:
		buf, err := io.ReadAll(io.LimitReader(s.stdin, proto.AttrValueLen))
		if err != nil {
			return failf(exitSysfail, "Failed to read attribute value from stdin: %v", err)
		}
		value = buf
	}
	value = cValue(value)
	if len(value) > proto.AttrValueLen {
		value = value[:proto.AttrValueLen]
	}
	_, res, err := s.findAttr(name, key, value, attrFlags{create: !del, excl: s.opts.snap.exclusive, del: del})
	if err != nil {
		return err
	}
	switch res {
	case proto.ResSuccess:
		return nil
	case proto.ResVdiExist:
		return failf(exitExists, "The attribute '%s' already exists", key)
	case proto.ResNoObj:
		return failf(exitMissing, "Attribute '%s' not found", key)
	case proto.ResNoVdi:
		return failf(exitMissing, "VDI not found")
	}
	return failf(exitFailure, "Failed to set attribute: %s", res)
}

func vdiGetattr(s *session, args []string) error {
	name := args[0]
	if len(args) < 2 {
		return usagef("Please specify the attribute key")
	}
	key := args[1]
	oid, res, err := s.findAttr(name, key, nil, attrFlags{})
	if err != nil {
		return err
	}
	switch res {
	case proto.ResSuccess:
	case proto.ResNoObj:
		return failf(exitMissing, "Attribute '%s' not found", key)
	case proto.ResNoVdi:
		return failf(exitMissing, "VDI not found")
	default:
		return failf(exitMissing, "Failed to find attribute oid: %s", res)
	}
	buf := make([]byte, proto.AttrSize)
	if err := s.readObj(oid, 0, buf, true); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return failf(exitSysfail, "Failed to read attribute oid: %s", proto.ResultOf(err))
	}
	var a proto.VdiAttr
	if err := a.Unmarshal(buf); err != nil {
		return failf(exitSysfail, "Failed to read attribute oid: %v", err)
	}
	s.out.Write(a.Value)
	return nil
}
