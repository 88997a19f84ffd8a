package proto

import "net/netip"

// Our additions to the protocol. Sheepdog's own opcodes stop below 0xF0;
// ours sit at 0xF0 and up (OpPunchPeer is in header.go), and flags of ours
// use bits Sheepdog leaves free for the op in question. A sheep that
// predates one of them answers INVALID_PARMS (unknown opcode) or ignores
// the flag.

// OpClusterPropose carries an encoded cluster entry from a follower to
// the raft leader (internal, proto 0x0a). The reply's result is the
// entry's result, and the log index the entry was applied at is at rsp
// @24 (ProposeIndex).
const OpClusterPropose Opcode = 0xF0

// ProposeIndex is the log index in an OpClusterPropose reply.
func (r *Response) ProposeIndex() uint64 { return le.Uint64(r.Arg[4:]) }

// SetProposeIndex sets the log index of an OpClusterPropose reply.
func (r *Response) SetProposeIndex(idx uint64) { le.PutUint64(r.Arg[4:], idx) }

// FlagRepairBadChunks is a REPAIR_REPLICA flag of ours (dog sends none):
// rewrite only the chunks that fail their checksums, and neither replace
// a copy that verifies nor create a missing one. Gateways and recovery set
// it: they know the copy is bad by its checksums, and a copy that merely
// differs from the good one may hold a write the good one has not got yet.
const FlagRepairBadChunks uint16 = 0x8000

// RepairRequest is REPAIR_REPLICA: the receiving node reads oid from node
// from and repairs its own copy with it; flags is 0 or
// FlagRepairBadChunks.
func RepairRequest(epoch uint32, oid uint64, from NodeID, flags uint16) Request {
	r := NewRequest(OpRepairReplica)
	r.Epoch = epoch
	r.Flags = flags
	r.SetForw(ForwArgs{Oid: oid, Addr: from.Addr, Port: from.Port})
	return r
}

// Node is the node a REPAIR_REPLICA request names, its address in
// Sheepdog's form (an IPv4-mapped address becomes 12 zero bytes and the
// IPv4 bytes).
func (f ForwArgs) Node() NodeID {
	return NodeIDFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(f.Addr).Unmap(), f.Port))
}

// FlagWaitRecovered is a STAT_RECOVERY flag of ours (dog sends none): the
// answer waits until the node has finished recovering epoch obj.tgt_epoch
// (its State reaches it), or a bounded time has passed, whichever comes
// first; the reply is STAT_RECOVERY's as ever. A node's cleanup asks its
// peers so, to drop its surplus copies as soon as the last peer is done
// instead of finding out at its next poll.
const FlagWaitRecovered uint16 = 0x8000
