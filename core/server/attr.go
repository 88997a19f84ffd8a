package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/vdi"
)

// getVdiAttr is GET_VDI_ATTR (docs/protocol.md §4.8): find, create, or delete
// a VDI attribute record. The reply names the attribute object (vdi_id is
// the name-hash vid, attr_id the slot) even when the result is an error,
// as sheep's does; dog then reads the object for getattr.
func (h *Handler) getVdiAttr(ctx context.Context, c *call) error {
	if c.req.Flags&proto.FlagCmdWrite == 0 {
		return fmt.Errorf("GET_VDI_ATTR without a record: %w", proto.ResInvalidParms)
	}
	f := vdi.AttrFlags{
		Create: c.req.Flags&proto.FlagCmdCreat != 0,
		Excl:   c.req.Flags&proto.FlagCmdExcl != 0,
		Delete: c.req.Flags&proto.FlagCmdDel != 0,
	}
	res, err := h.cfg.Vdi.Attr(ctx, c.data, c.req.Vdi().SnapID, f)
	c.rsp.SetVdi(proto.VdiRsp{VdiID: res.Vid, AttrID: res.AttrID, Copies: res.Copies})
	return err
}
