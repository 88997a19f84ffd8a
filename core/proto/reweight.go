package proto

// OpReweightPeer asks a sheep to weigh its store again (REWEIGHT, 0xB5,
// reaches every node of the cluster through it; internal, proto 0x0a).
// The reply carries the space the node gossips afterwards (ReweightSpace)
// and whether it changed (ReweightChanged).
const OpReweightPeer Opcode = 0xF4

// ReweightSpace is the node's space in an OpReweightPeer reply (u64 @24).
func (r *Response) ReweightSpace() uint64 { return le.Uint64(r.Arg[4:]) }

// ReweightChanged reports whether the node's space changed (u8 @32).
func (r *Response) ReweightChanged() bool { return r.Arg[12] != 0 }

// SetReweight fills an OpReweightPeer reply.
func (r *Response) SetReweight(space uint64, changed bool) {
	le.PutUint64(r.Arg[4:], space)
	r.Arg[12] = 0
	if changed {
		r.Arg[12] = 1
	}
}
