package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// OpClusterPropose is our internal op (not in Sheepdog) carrying an encoded
// cluster entry from a follower to the raft leader. The reply carries the
// result and, at rsp @24, the log index the entry was applied at.
//
// Anything that reaches raft is written to every node's log for good, so
// an entry is decoded and checked here first: garbage is answered
// INVALID_PARMS and never proposed. (Authenticating the sender comes with
// the cluster key.)
const OpClusterPropose proto.Opcode = 0xF0

// maxProposal bounds an encoded entry: the largest is an epoch or a format
// with every node of the biggest cluster (about 200 bytes a node).
const maxProposal = 2 << 20

func (h *Handler) clusterPropose(ctx context.Context, c *call) error {
	if h.cfg.Propose == nil {
		return proto.ResNoSupport
	}
	entry := c.data
	if len(entry) > 0 { // empty: a read barrier, nothing is written
		e, err := decodeProposal(entry)
		if err != nil {
			h.badClients.Warn("cluster proposal refused", "peer", c.peer, "len", len(entry), "err", err)
			return fmt.Errorf("cluster proposal: %v: %w", err, proto.ResInvalidParms)
		}
		if entry, err = json.Marshal(e); err != nil {
			return err
		}
	}
	res, idx, err := h.cfg.Propose(ctx, entry)
	if err != nil {
		return fmt.Errorf("propose: %w: %v", proto.ResClusterError, err)
	}
	le.PutUint64(c.rsp.Arg[4:], idx)
	if res != proto.ResSuccess {
		return res
	}
	return nil
}

// decodeProposal decodes an entry as cluster.Raft encodes it (JSON, no
// unknown fields, nothing after it) and checks it with validEntry.
func decodeProposal(b []byte) (*cluster.Entry, error) {
	if len(b) > maxProposal {
		return nil, fmt.Errorf("%d bytes, at most %d", len(b), maxProposal)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var e cluster.Entry
	if err := d.Decode(&e); err != nil {
		return nil, fmt.Errorf("not an entry: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the entry")
	}
	if err := validEntry(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// validEntry checks what an entry of each kind must hold, as the nodes
// that propose them build them (makeFS, core/vdi, the epoch proposer). A
// new Kind must be added here or followers cannot forward it.
func validEntry(e *cluster.Entry) error {
	vid := func(v uint32, zeroOK bool) error {
		if v >= proto.NrVdis || v == 0 && !zeroOK {
			return fmt.Errorf("vid %#x out of range", v)
		}
		return nil
	}
	shift := func(s uint8) error {
		if s != 0 && (s < proto.MinBlockSizeShift || s > proto.MaxBlockSizeShift) {
			return fmt.Errorf("block size shift %d", s)
		}
		return nil
	}
	switch e.Kind {
	case cluster.KindFormat:
		if e.Ctime == 0 {
			return fmt.Errorf("format without a ctime")
		}
		if e.Copies == 0 || e.Copies > proto.MaxCopies || !validPolicy(e.Copies, e.CopyPolicy) {
			return fmt.Errorf("format with %d copies, policy %#x", e.Copies, e.CopyPolicy)
		}
		if e.BlockSizeShift == 0 {
			return fmt.Errorf("format without a block size")
		}
		if err := shift(e.BlockSizeShift); err != nil {
			return err
		}
		if e.Store != "plain" && e.Store != "tree" {
			return fmt.Errorf("format with store %q", e.Store)
		}
		return validNodes(e.Nodes)
	case cluster.KindEpoch:
		return validNodes(e.Nodes)
	case cluster.KindShutdown, cluster.KindRecovery:
		return nil
	case cluster.KindAddVdi:
		if e.Copies > proto.MaxCopies || e.CopyPolicy != 0 && !validPolicy(e.Copies, e.CopyPolicy) {
			return fmt.Errorf("vdi with %d copies, policy %#x", e.Copies, e.CopyPolicy)
		}
		if err := shift(e.BlockSizeShift); err != nil {
			return err
		}
		for _, err := range []error{vid(e.Vid, false), vid(e.OldVid, true), vid(e.ParentVid, true)} {
			if err != nil {
				return err
			}
		}
		return nil
	case cluster.KindDelVdi:
		if err := vid(e.OldVid, true); err != nil {
			return err
		}
		return vid(e.Vid, false)
	case cluster.KindRelease, cluster.KindRecycle:
		return vid(e.Vid, false)
	case cluster.KindAlterCopy:
		if e.Copies == 0 || e.Copies > proto.MaxCopies || e.CopyPolicy != 0 {
			return fmt.Errorf("alter copy to %d copies, policy %#x", e.Copies, e.CopyPolicy)
		}
		return vid(e.Vid, true)
	case cluster.KindLock:
		if e.Token == 0 {
			return fmt.Errorf("lock without a token")
		}
		return vid(e.Vid, false)
	case cluster.KindIdentity:
		if e.ClusterID == "" || len(e.ClusterID) > maxIdentity {
			return fmt.Errorf("cluster identity of %d bytes", len(e.ClusterID))
		}
		return nil
	case cluster.KindAttrClaim:
		if !proto.IsAttrObj(e.Oid) || e.AttrID == "" || len(e.AttrID) > maxIdentity {
			return fmt.Errorf("attribute claim of %#x by %d bytes", e.Oid, len(e.AttrID))
		}
		return nil
	}
	return fmt.Errorf("unknown entry kind %d", e.Kind)
}

// maxIdentity bounds the identity strings an entry carries (a cluster id,
// an attribute record's name, tag, snapshot and key: about 1 KiB at most).
const maxIdentity = 4096

// validPolicy reports whether copies and policy describe replication
// (policy 0) or a valid erasure code with copies = d+p.
func validPolicy(copies, policy uint8) bool {
	if policy == 0 {
		return true
	}
	p := erasure.Policy(policy)
	return p.Valid() && p.Total() == int(copies)
}

// validNodes checks the node list of a format or an epoch: at least one
// node, each with a port, none twice.
func validNodes(nodes []proto.Node) error {
	if len(nodes) == 0 || len(nodes) > proto.MaxNodes {
		return fmt.Errorf("%d nodes", len(nodes))
	}
	seen := make(map[proto.NodeID]bool, len(nodes))
	for _, n := range nodes {
		if n.Port == 0 || n.Addr == ([16]byte{}) {
			return fmt.Errorf("node %v without an address", n.NodeID)
		}
		if seen[n.NodeID] {
			return fmt.Errorf("node %v twice", n.NodeID)
		}
		seen[n.NodeID] = true
	}
	return nil
}
