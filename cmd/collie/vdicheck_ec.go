package main

import (
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// checkErasure is dog's check of an erasure-coded object (docs/protocol.md §7):
// read strip i from the i-th holder (READ_PEER with ec_index i); with every
// strip present, recompute the parity strips from the data strips and
// compare; with up to p strips missing, rebuild them from the others and
// write them back (CREATE_AND_WRITE_PEER), printing "fixed missing OID,
// copy index I"; with more missing, report the object lost.
//
// Beyond dog: a strip that fails the store's checksums (EIO) is rebuilt
// like a missing one; parity that does not match its data is reported as
// dog does ("object OID is inconsistent") and then rewritten from the data
// strips ("fixed inconsistent parity OID, copy index I").
func (c *nodeConns) checkErasure(r *objectCheck, oid uint64, pol erasure.Policy, objSize int64, holders []proto.Node) error {
	size := pol.StoredSize(objSize)
	total := pol.Total()
	strips := make([][]byte, total)
	var missing []int
	for i := range total {
		buf := make([]byte, size)
		req := proto.NewRequest(proto.OpReadPeer)
		req.Epoch = c.s.epoch
		req.SetObj(proto.ObjArgs{Oid: oid, TgtEpoch: c.s.epoch, ECIndex: uint8(i)})
		rsp, n, err := c.do(holders[i], &req, nil, buf)
		if err != nil {
			return err
		}
		switch {
		case rsp.Result == proto.ResSuccess && int64(n) == size:
			strips[i] = buf
		case rsp.Result == proto.ResNoObj, rsp.Result == proto.ResEIO:
			missing = append(missing, i)
		default:
			return failf(exitFailure, "failed to read %016x from %s, %s", oid, displayAddr(nodeAddr(holders[i])), rsp.Result)
		}
	}
	codec, err := erasure.CodecFor(pol)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		ok, err := codec.Verify(strips)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		fmt.Fprintf(&r.errs, "object %016x is inconsistent\n", oid)
		parity := make([][]byte, total)
		copy(parity, strips[:pol.Data()])
		for i := pol.Data(); i < total; i++ {
			parity[i] = make([]byte, size)
		}
		if err := codec.Encode(parity); err != nil {
			return err
		}
		for i := pol.Data(); i < total; i++ {
			if string(parity[i]) == string(strips[i]) {
				continue
			}
			if err := c.writeStrip(oid, i, holders[i], parity[i]); err != nil {
				return err
			}
			fmt.Fprintf(&r.out, "fixed inconsistent parity %016x, copy index %d\n", oid, i)
		}
		return nil
	}
	if len(missing) > pol.Parity() {
		fmt.Fprintf(&r.errs, "failed to rebuild object %016x. %d copies get lost, more than %d\n", oid, len(missing), pol.Parity())
		r.failed = true
		return nil
	}
	if err := codec.Reconstruct(strips, false); err != nil {
		return err
	}
	for _, i := range missing {
		if err := c.writeStrip(oid, i, holders[i], strips[i]); err != nil {
			return err
		}
		fmt.Fprintf(&r.out, "fixed missing %016x, copy index %d\n", oid, i)
	}
	return nil
}

// writeStrip is dog's write_object_to for strip i: the whole strip, with
// CREATE_AND_WRITE_PEER.
func (c *nodeConns) writeStrip(oid uint64, i int, n proto.Node, data []byte) error {
	req := proto.NewRequest(proto.OpCreateAndWritePeer)
	req.Epoch = c.s.epoch
	req.Flags = proto.FlagCmdWrite
	req.SetObj(proto.ObjArgs{Oid: oid, ECIndex: uint8(i)})
	rsp, _, err := c.do(n, &req, data, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "FATAL: failed to write %016x, %s", oid, rsp.Result)
	}
	return nil
}
