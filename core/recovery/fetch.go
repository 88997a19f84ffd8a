package recovery

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/bufpool"
)

// recoverOne copies f.Oid in from the first of its sources that has a
// good copy, written without a sync (the run flushes every copy it
// fetched before it reports the epoch recovered). The whole-object read from a peer (and its retries over the
// sources) runs without the object's lock (store.Locks.LockAfter), so
// the writers of the lock's stripe are not held up behind peer reads;
// then, holding the lock, a copy that appeared meanwhile (a write filled
// this node) wins, and the one read is dropped. A write that comes here
// after the copy is stored applies on top of it, as on any copy.
func (r *Recovery) recoverOne(ctx context.Context, f Fetch, epoch uint32) error {
	size := r.size(f.Oid)
	// A pooled buffer: a fresh 4 MiB one per object costs page faults on
	// every page the reply is read into, which under memory pressure
	// (the kernel compacting for the page cache) took most of a fetch.
	pb := bufpool.Get(int(size))
	defer bufpool.Put(pb)
	var buf []byte
	var bad []proto.Node
	err := r.locks.LockAfter(f.Oid, func() (err error) {
		buf, bad = nil, nil
		if r.store.Exists(f.Oid) {
			return nil // nothing to read: the copy here wins
		}
		buf, bad, err = r.fetch(ctx, f, *pb, epoch)
		return err
	})
	if err != nil {
		return err
	}
	if !r.store.Exists(f.Oid) && buf != nil {
		err = r.store.Create(ctx, f.Oid, size, 0, buf, false) // run flushes them all
		if err == nil {
			r.progress.Lock()
			r.progress.moved += uint64(size)
			r.progress.Unlock()
		}
	}
	r.locks.Unlock(f.Oid)
	if err != nil {
		return err
	}
	r.repairHolders(ctx, f.Oid, epoch, bad)
	return nil
}

// fetch reads the whole of f.Oid into buf (its length is the object's
// size) from the first source that returns it all. bad lists the sources
// whose copy failed its checksums (EIO).
func (r *Recovery) fetch(ctx context.Context, f Fetch, buf []byte, epoch uint32) (_ []byte, bad []proto.Node, err error) {
	var last error
	for _, n := range f.Sources {
		req := proto.NewRequest(proto.OpReadPeer)
		req.Flags = proto.FlagCmdRecovery
		req.Epoch = epoch
		tgt := epoch
		if f.Epoch != 0 {
			tgt = f.Epoch // the source's stale copy of that epoch
		}
		req.SetObj(proto.ObjArgs{Oid: f.Oid, TgtEpoch: tgt})
		_, got, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, buf)
		if err != nil {
			if proto.ResultOf(err) == proto.ResEIO {
				bad = append(bad, n)
			}
			last = err
			continue
		}
		if got != len(buf) {
			last = fmt.Errorf("short read %d of %d from %s", got, len(buf), n.NodeID)
			continue
		}
		return buf, bad, nil
	}
	if last == nil {
		last = proto.ResNoObj
	}
	return nil, bad, last
}

// repairHolders asks each holder whose copy of oid was bad to repair it
// from ours, which was just stored from a verified read (REPAIR_REPLICA;
// the holder rewrites only its bad chunks, under its own lock).
func (r *Recovery) repairHolders(ctx context.Context, oid uint64, epoch uint32, bad []proto.Node) {
	for _, n := range bad {
		req := proto.RepairRequest(epoch, oid, r.self, proto.FlagRepairBadChunks)
		if _, _, err := r.peers.Call(ctx, n.NodeID.String(), &req, nil, nil); err != nil {
			r.log.Warn("recovery: repair bad copy", "oid", fmt.Sprintf("%016x", oid), "node", n.NodeID.String(), "err", err)
			continue
		}
		r.log.Warn("recovery: repaired bad copy", "oid", fmt.Sprintf("%016x", oid), "node", n.NodeID.String())
	}
}

// staleList asks n for the copies in its stale area (OpGetStaleList).
func (r *Recovery) staleList(ctx context.Context, n proto.Node, epoch uint32) ([]proto.StaleEntry, error) {
	req := proto.NewRequest(proto.OpGetStaleList)
	req.Epoch = epoch
	req.Flags = proto.FlagCmdRecovery
	b, err := r.callGrowing(ctx, n, &req, 64<<10)
	if err != nil {
		return nil, err
	}
	return proto.ParseStaleList(b)
}

// callGrowing sends req to n with a reply buffer of first bytes, four
// times larger on each BUFFER_SMALL (up to 1 GiB), and returns the reply.
func (r *Recovery) callGrowing(ctx context.Context, n proto.Node, req *proto.Request, first int) ([]byte, error) {
	for size := first; size <= 1<<30; size *= 4 {
		buf := make([]byte, size)
		rsp, got, err := r.peers.Call(ctx, n.NodeID.String(), req, nil, buf)
		if rsp.Result == proto.ResBufferSmall {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:got], nil
	}
	return nil, fmt.Errorf("reply of %s to %v too large", n.NodeID, req.Opcode)
}

// size is the object's full size according to the vdi state.
func (r *Recovery) size(oid uint64) int64 {
	var shift uint8
	r.cluster.View(func(s *cluster.State) {
		shift = s.BlockSizeShift
		if v := s.VdiState(proto.OidToVid(oid)); v != nil && v.BlockSizeShift != 0 {
			shift = v.BlockSizeShift
		}
	})
	return proto.ObjectSize(oid, shift)
}

// objList asks n for every object it stores.
func (r *Recovery) objList(ctx context.Context, n proto.Node, epoch uint32) ([]uint64, error) {
	req := proto.NewRequest(proto.OpGetObjList)
	req.Epoch = epoch
	b, err := r.callGrowing(ctx, n, &req, 1<<20)
	if err != nil {
		return nil, err
	}
	oids := make([]uint64, len(b)/8)
	for i := range oids {
		oids[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return oids, nil
}
