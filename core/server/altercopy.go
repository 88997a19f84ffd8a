package server

import (
	"context"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// alterClusterCopy is ALTER_CLUSTER_COPY (dog cluster alter-copy): a new
// number of copies for the cluster and its replicated VDIs (see
// cluster.State's applyAlterCopy). Each changed VDI's inode then says so
// too (nr_copies, as dog vdi alter-copy writes it), and recovery, started
// by the entry on every node, moves the objects.
func (h *Handler) alterClusterCopy(ctx context.Context, c *call) error {
	a := c.req.Cluster()
	if a.CopyPolicy != 0 {
		return fmt.Errorf("alter copy of an erasure-coded cluster: %w", proto.ResInvalidParms)
	}
	var vids []uint32
	h.cfg.Cluster.View(func(s *cluster.State) {
		for _, v := range s.SortedVids() {
			if st := s.VdiState(v); !st.Deleted && st.CopyPolicy == 0 {
				vids = append(vids, v)
			}
		}
	})
	if err := h.proposeAlterCopy(ctx, 0, a.Copies); err != nil {
		return err
	}
	for _, v := range vids {
		if err := h.setInodeCopies(ctx, v, a.Copies); err != nil {
			return err
		}
	}
	h.cfg.Log.Info("cluster redundancy changed", "copies", a.Copies, "vdis", len(vids))
	return nil
}

// alterVdiCopy is ALTER_VDI_COPY (dog vdi alter-copy): dog has written
// the inode's nr_copies already; the VDI's state follows, and recovery
// moves its objects.
func (h *Handler) alterVdiCopy(ctx context.Context, c *call) error {
	a := c.req.VdiState()
	if a.CopyPolicy != 0 {
		return fmt.Errorf("alter copy of an erasure-coded vdi: %w", proto.ResInvalidParms)
	}
	if err := h.proposeAlterCopy(ctx, a.NewVid, a.Copies); err != nil {
		return err
	}
	h.cfg.Log.Info("vdi redundancy changed", "vid", fmt.Sprintf("%x", a.NewVid), "copies", a.Copies)
	return nil
}

func (h *Handler) proposeAlterCopy(ctx context.Context, vid uint32, copies uint8) error {
	if copies == 0 || copies > proto.MaxCopies {
		return fmt.Errorf("%d copies: %w", copies, proto.ResInvalidParms)
	}
	res, err := h.cfg.Cluster.Propose(ctx, &cluster.Entry{Kind: cluster.KindAlterCopy, Vid: vid, Copies: copies})
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return res
	}
	return nil
}

// setInodeCopies writes nr_copies into vid's inode.
func (h *Handler) setInodeCopies(ctx context.Context, vid uint32, copies uint8) error {
	if err := h.cfg.Gateway.WriteObject(ctx, proto.VidToVdiOid(vid), proto.InodeNrCopiesOffset, []byte{copies}, 0); err != nil {
		return fmt.Errorf("inode %x: nr_copies: %w", vid, err)
	}
	return nil
}
