package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/placement"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// vdi check and cluster check (docs/protocol.md §8.1, §8.3), as dog does them:
// for every object of a VDI (its inode and each allocated data object), ask
// each node that should hold a copy for its SHA-1 (GET_HASH), take the
// majority (Boyer-Moore vote), and have every holder whose copy is missing
// or different repair it from a majority holder (REPAIR_REPLICA; READ_PEER
// and CREATE_AND_WRITE_PEER from here when the holder does not know that
// op). Prints "fixed replica OID" / "fixed missing OID" per repaired copy
// and "finish check&repair NAME".
//
// Beyond dog: a holder whose copy fails the store's checksums answers
// GET_HASH with EIO (dog would stop there); it takes no part in the vote
// and is repaired like a different copy. A failed repair makes the command
// exit 1 after the finish line. With -e it only asks each node which of
// its objects it lacks (OIDS_EXIST).

func vdiCheck(s *session, args []string) error {
	name := args[0]
	vid, res, err := s.findVdi(name, s.opts.snapID, s.opts.snapTag)
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return failf(exitFailure, "Failed to open VDI %s (snapshot id: %d snapshot tag: %s): %s\nFATAL: no inode objects",
			name, s.opts.snapID, s.opts.snapTag, res)
	}
	ino, err := s.readInode(vid, true)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		what := "a vdi " + name
		switch {
		case s.opts.snapID != 0:
			what = fmt.Sprintf("a snapshot %s:%d", name, s.opts.snapID)
		case s.opts.snapTag != "":
			what = fmt.Sprintf("a snapshot %s:%s", name, s.opts.snapTag)
		}
		return failf(exitFailure, "Failed to read %s\nFATAL: no inode objects", what)
	}
	if s.opts.snap.exist {
		return s.checkVdiExist(ino)
	}
	return s.checkVdi(ino)
}

// vdiObjects lists the inode and the allocated data objects of ino.
func vdiObjects(ino *proto.Inode) []uint64 {
	oids := []uint64{proto.VidToVdiOid(ino.VdiID)}
	if ino.StorePolicy == 0 {
		for idx, vid := range ino.DataVdiID[:min(dataObjects(ino), proto.MaxDataIndexes)] {
			if vid != 0 {
				oids = append(oids, proto.VidToDataOid(vid, uint32(idx)))
			}
		}
	}
	return oids
}

// checkVdiExist is dog's vdi check -e: ask every node with OIDS_EXIST
// which of the objects it should hold it lacks; nothing is compared or
// repaired.
func (s *session) checkVdiExist(ino *proto.Inode) error {
	ring := placement.New(s.nodes)
	copies := ring.Copies(int(ino.NrCopies))
	want := map[proto.NodeID][]byte{}
	for _, oid := range vdiObjects(ino) {
		for _, n := range ring.Locate(oid, copies) {
			want[n.NodeID] = binary.LittleEndian.AppendUint64(want[n.NodeID], oid)
		}
	}
	total := 0
	for _, n := range s.nodes {
		oids := want[n.NodeID]
		if len(oids) == 0 {
			continue
		}
		err := s.onNode(n, func(c *client.Client) error {
			req := proto.NewRequest(proto.OpOidsExist)
			req.Flags = proto.FlagCmdPiggyback
			missing := make([]byte, len(oids))
			rsp, got, err := doOn(s.ctx, c, &req, oids, missing)
			if err != nil {
				return err
			}
			if rsp.Result != proto.ResSuccess && rsp.Result != proto.ResNoObj {
				return failf(exitFailure, "%s", rsp.Result)
			}
			for i := 0; i+8 <= got; i += 8 {
				fmt.Fprintf(s.out, "[%s] oid %016x is missing.\n", displayAddr(nodeAddr(n)), binary.LittleEndian.Uint64(missing[i:]))
				total++
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if total > 0 {
		fmt.Fprintf(s.out, "%s lost %d object(s).\n", ino.Name, total)
		return &exitError{code: exitFailure}
	}
	fmt.Fprintf(s.out, "%s is fine, no object is missing.\n", ino.Name)
	return nil
}

func clusterCheck(s *session, _ []string) error {
	vids, err := s.liveVids()
	if err != nil {
		return err
	}
	failed := false
	for _, vid := range vids {
		ino, err := s.readInode(vid, true)
		if err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			fmt.Fprintln(s.stderr, "Failed to read inode")
			continue
		}
		if ino.Name == "" {
			continue // deleted
		}
		if ino.SnapCtime != 0 {
			fmt.Fprintf(s.out, "fix snapshot %s (id: %d, tag: \"%s\")\n", ino.Name, ino.SnapID, ino.Tag)
		} else {
			fmt.Fprintf(s.out, "fix vdi %s\n", ino.Name)
		}
		if err := s.checkVdi(ino); err != nil {
			var ee *exitError
			if !errors.As(err, &ee) || ee.msg != "" {
				return err
			}
			failed = true
		}
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// checkVdi is dog's do_vdi_check for a replicated VDI.
func (s *session) checkVdi(ino *proto.Inode) error {
	ring := placement.New(s.nodes)
	pol := erasure.Policy(ino.CopyPolicy)
	if pol.Erasure() && ring.Zones() < int(ino.NrCopies) {
		return failf(exitFailure, "ABORT: Not enough active zones for consistency-checking erasure coded VDI")
	}
	copies := ring.Copies(int(ino.NrCopies))
	oids := vdiObjects(ino)
	conns := &nodeConns{s: s, m: map[string]*client.Client{}}
	defer conns.close()
	reports := make([]objectCheck, len(oids))
	err := parallel(uint64(len(oids)), 16, func(i uint64) error {
		size := proto.ObjectSize(oids[i], ino.BlockSizeShift)
		if pol.Erasure() && proto.IsErasureOid(oids[i]) {
			return conns.checkErasure(&reports[i], oids[i], pol, size, ring.Locate(oids[i], copies))
		}
		return conns.check(&reports[i], oids[i], size, ring.Locate(oids[i], copies))
	})
	if err != nil {
		return err
	}
	failed := false
	for _, r := range reports {
		s.out.WriteString(r.out.String())
		s.stderr.Write(r.errs.Bytes())
		failed = failed || r.failed
	}
	fmt.Fprintf(s.out, "finish check&repair %s\n", ino.Name)
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// objectCheck is what checking one object printed and whether a repair
// failed.
type objectCheck struct {
	out, errs bytes.Buffer
	failed    bool
}

// replica is one holder's answer to GET_HASH.
type replica struct {
	node  proto.Node
	found bool // answered with a hash
	bad   bool // answered EIO: present but failing its checksums
	hash  [20]byte
}

// nodeConns keeps one pipelined connection per node for the check.
type nodeConns struct {
	s  *session
	mu sync.Mutex
	m  map[string]*client.Client
}

func (c *nodeConns) get(n proto.Node) (*client.Client, error) {
	addr := nodeAddr(n)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.m[addr]; cl != nil {
		return cl, nil
	}
	cl, err := c.s.dial(addr)
	if err != nil {
		return nil, err
	}
	c.m[addr] = cl
	return cl, nil
}

func (c *nodeConns) close() {
	for _, cl := range c.m {
		cl.Close()
	}
}

// do sends req to node n; transport failures end the command.
func (c *nodeConns) do(n proto.Node, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	cl, err := c.get(n)
	if err != nil {
		return proto.Response{}, 0, err
	}
	return doOn(c.s.ctx, cl, req, wdata, rbuf)
}

// check checks and repairs the copies of oid, an object of size bytes, on
// holders.
func (c *nodeConns) check(r *objectCheck, oid uint64, size int64, holders []proto.Node) error {
	reps := make([]replica, len(holders))
	for i, n := range holders {
		req := proto.NewRequest(proto.OpGetHash)
		req.Epoch = c.s.epoch
		req.SetObj(proto.ObjArgs{Oid: oid, TgtEpoch: c.s.epoch})
		rsp, _, err := c.do(n, &req, nil, nil)
		if err != nil {
			return err
		}
		reps[i].node = n
		switch rsp.Result {
		case proto.ResSuccess:
			reps[i].found, reps[i].hash = true, rsp.Hash()
		case proto.ResNoObj:
		case proto.ResEIO:
			reps[i].bad = true
		default:
			return failf(exitFailure, "failed to read %016x from %s, %s", oid, displayAddr(nodeAddr(n)), rsp.Result)
		}
	}
	major := vote(reps)
	if major == nil {
		switch {
		case slices.ContainsFunc(reps, func(p replica) bool { return p.found }):
			fmt.Fprintf(&r.errs, "no majority of %016x\n", oid)
		case slices.ContainsFunc(reps, func(p replica) bool { return p.bad }):
			fmt.Fprintf(&r.errs, "no good copy of %016x: every copy fails its checksums\n", oid)
			r.failed = true
		default:
			fmt.Fprintf(&r.errs, "no node has %016x\n", oid)
		}
		return nil
	}
	for i := range reps {
		p := &reps[i]
		if p == major || (p.found && p.hash == major.hash) {
			continue
		}
		if err := c.repair(oid, size, p.node, major.node); err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			fmt.Fprintf(&r.errs, "failed to repair object %016x from %s to %s: %v\n",
				oid, displayAddr(nodeAddr(major.node)), displayAddr(nodeAddr(p.node)), err)
			r.failed = true
			continue
		}
		if p.found || p.bad {
			fmt.Fprintf(&r.out, "fixed replica %016x\n", oid)
		} else {
			fmt.Fprintf(&r.out, "fixed missing %016x\n", oid)
		}
	}
	return nil
}

// vote is dog's Boyer-Moore majority vote over the copies that answered
// with a hash: the majority copy, or nil when there is none.
func vote(reps []replica) *replica {
	var major *replica
	count, live := 0, 0
	for i := range reps {
		p := &reps[i]
		if !p.found {
			continue
		}
		live++
		if count == 0 {
			major = p
		}
		if major.hash == p.hash {
			count++
		} else {
			count--
		}
	}
	if major == nil {
		return nil
	}
	count = 0
	for i := range reps {
		if reps[i].found && reps[i].hash == major.hash {
			count++
		}
	}
	if count > live/2 {
		return major
	}
	return nil
}

// repair makes node bad hold the copy of oid that node good holds:
// REPAIR_REPLICA, or, when bad does not know it, READ_PEER from good and
// CREATE_AND_WRITE_PEER to bad of the whole object (size bytes). Both carry
// the session's epoch.
func (c *nodeConns) repair(oid uint64, size int64, bad, good proto.Node) error {
	req := proto.RepairRequest(c.s.epoch, oid, good.NodeID, 0)
	rsp, _, err := c.do(bad, &req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResInvalidParms && rsp.Result != proto.ResNoSupport {
		if rsp.Result != proto.ResSuccess {
			return rsp.Result
		}
		return nil
	}
	buf := make([]byte, size)
	req = proto.NewRequest(proto.OpReadPeer)
	req.Epoch = c.s.epoch
	req.SetObj(proto.ObjArgs{Oid: oid})
	rsp, n, err := c.do(good, &req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess || int64(n) != size {
		return fmt.Errorf("read %d bytes from %s: %w", n, displayAddr(nodeAddr(good)), rsp.Result)
	}
	req = proto.NewRequest(proto.OpCreateAndWritePeer)
	req.Epoch = c.s.epoch
	req.SetObj(proto.ObjArgs{Oid: oid})
	if rsp, _, err = c.do(bad, &req, buf[:n], nil); err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return rsp.Result
	}
	return nil
}
