package client

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Objects is the object interface of core/volume over the network: every
// call is one gateway request (READ/WRITE/CREATE_AND_WRITE/REMOVE_OBJ).
type Objects struct {
	C *Client
	// Flags are added to every object request (e.g. FlagCmdDirect).
	Flags uint16
}

func objReq(op proto.Opcode, oid uint64, off int64, flags uint16) proto.Request {
	r := proto.NewRequest(op)
	r.Flags = flags
	r.SetObj(proto.ObjArgs{Oid: oid, Offset: uint32(off)})
	return r
}

// ReadObject reads len(buf) bytes of oid at off.
func (o Objects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	r := objReq(proto.OpReadObj, oid, off, o.Flags)
	_, n, err := o.C.Call(ctx, &r, nil, buf)
	if err != nil {
		return fmt.Errorf("read %016x: %w", oid, err)
	}
	if n != len(buf) {
		return fmt.Errorf("read %016x: short reply %d of %d: %w", oid, n, len(buf), proto.ResEIO)
	}
	return nil
}

// WriteObject writes data into oid at off.
func (o Objects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	r := objReq(proto.OpWriteObj, oid, off, o.Flags|flags)
	if _, _, err := o.C.Call(ctx, &r, nonNil(data), nil); err != nil {
		return fmt.Errorf("write %016x: %w", oid, err)
	}
	return nil
}

// CreateAndWrite creates oid (copy-on-write from cowFrom when nonzero).
func (o Objects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	r := objReq(proto.OpCreateAndWriteObj, oid, off, o.Flags|flags)
	if cowFrom != 0 {
		a := r.Obj()
		a.CowOid = cowFrom
		r.SetObj(a)
		r.Flags |= proto.FlagCmdCow
	}
	if _, _, err := o.C.Call(ctx, &r, nonNil(data), nil); err != nil {
		return fmt.Errorf("create %016x: %w", oid, err)
	}
	return nil
}

// RemoveObject removes oid.
func (o Objects) RemoveObject(ctx context.Context, oid uint64) error {
	r := objReq(proto.OpRemoveObj, oid, 0, o.Flags)
	if _, _, err := o.C.Call(ctx, &r, nil, nil); err != nil {
		return fmt.Errorf("remove %016x: %w", oid, err)
	}
	return nil
}

// Flush is a no-op: every write the sheep acknowledged is stable.
func (o Objects) Flush(ctx context.Context) error { return ctx.Err() }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
