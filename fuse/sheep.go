package fuse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/volume"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// sheep is the connection to the sheep sheepfs talks to: one pipelined
// client, dialled on first use and again after it broke. A sheep that went
// away fails the calls in flight (EIO for the caller) and the next call
// dials again, so a sheep that comes back, or a new address written to
// /config/sheep_info, needs no remount.
type sheep struct {
	dialTimeout time.Duration
	mu          struct {
		sync.Mutex
		addr    string
		c       *client.Client // nil: not connected
		dialing *dial          // the dial in progress, if any
	}
}

// dial is one connection attempt that every caller needing a connection
// meanwhile waits for, each no longer than its own deadline. Without it,
// callers would dial one after another behind a lock when the sheep's
// host is unreachable, and wait far past their timeout.
type dial struct {
	done chan struct{}
	c    *client.Client
	err  error
}

func newSheep(addr string, dialTimeout time.Duration) *sheep {
	s := &sheep{dialTimeout: dialTimeout}
	s.mu.addr = addr
	return s
}

// Addr is the "host:port" of the sheep.
func (s *sheep) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.addr
}

// SetAddr dials addr and makes it the sheep for every later call. The old
// connection is closed after grace, so that the calls running on it can
// finish. Nothing changes when addr cannot be reached.
func (s *sheep) SetAddr(ctx context.Context, addr string, grace time.Duration) error {
	c, err := client.Dial(ctx, addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.mu.c
	s.mu.addr, s.mu.c = addr, c
	s.mu.Unlock()
	if old != nil {
		time.AfterFunc(grace, func() { old.Close() })
	}
	return nil
}

// get returns the current connection, dialling one when there is none.
func (s *sheep) get(ctx context.Context) (*client.Client, error) {
	s.mu.Lock()
	if c := s.mu.c; c != nil {
		s.mu.Unlock()
		return c, nil
	}
	d := s.mu.dialing
	if d == nil {
		d = &dial{done: make(chan struct{})}
		s.mu.dialing = d
		go s.dial(d, s.mu.addr)
	}
	s.mu.Unlock()
	select {
	case <-d.done:
		return d.c, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("connect to %s: %w", s.Addr(), ctx.Err())
	}
}

func (s *sheep) dial(d *dial, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.dialTimeout)
	c, err := client.Dial(ctx, addr)
	cancel()
	s.mu.Lock()
	s.mu.dialing = nil
	switch {
	case err != nil:
	case s.mu.c == nil && s.mu.addr == addr:
		s.mu.c = c
	default:
		// SetAddr connected elsewhere meanwhile: use that one.
		c.Close()
		c = s.mu.c
		if c == nil {
			err = fmt.Errorf("connect to %s: %w", addr, client.ErrClosed)
		}
	}
	d.c, d.err = c, err
	s.mu.Unlock()
	close(d.done)
}

// check forgets c when err says its connection is unusable: broken, or
// dropped by the client because a call was abandoned at its deadline.
// Result codes from the sheep leave the connection alone.
func (s *sheep) check(c *client.Client, err error) {
	if err == nil {
		return
	}
	if !errors.Is(err, client.ErrClosed) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	if s.mu.c == c {
		s.mu.c = nil
	}
	s.mu.Unlock()
	c.Close()
}

// Close closes the connection.
func (s *sheep) Close() {
	s.mu.Lock()
	c := s.mu.c
	s.mu.c = nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// call sends one request and turns a non-success result into an error
// wrapping the proto.Result.
func (s *sheep) call(ctx context.Context, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	c, err := s.get(ctx)
	if err != nil {
		return proto.Response{}, 0, err
	}
	rsp, n, err := c.Call(ctx, req, wdata, rbuf)
	s.check(c, err)
	return rsp, n, err
}

// objects is the object layer of core/volume over the sheep's current
// connection: volumes opened through it survive reconnects.
type objects struct{ s *sheep }

var _ volume.ObjectIO = objects{}

func (o objects) with(ctx context.Context, f func(client.Objects) error) error {
	c, err := o.s.get(ctx)
	if err != nil {
		return err
	}
	err = f(client.Objects{C: c})
	o.s.check(c, err)
	return err
}

func (o objects) ReadObject(ctx context.Context, oid uint64, off int64, buf []byte) error {
	return o.with(ctx, func(co client.Objects) error { return co.ReadObject(ctx, oid, off, buf) })
}

func (o objects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	return o.with(ctx, func(co client.Objects) error { return co.WriteObject(ctx, oid, off, data, flags) })
}

func (o objects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	return o.with(ctx, func(co client.Objects) error { return co.CreateAndWrite(ctx, oid, cowFrom, off, data, flags) })
}

func (o objects) RemoveObject(ctx context.Context, oid uint64) error {
	return o.with(ctx, func(co client.Objects) error { return co.RemoveObject(ctx, oid) })
}

// Flush has nothing to send: a sheep acknowledges a write (without the
// CACHE flag, which sheepfs never sets) once it is stable.
func (o objects) Flush(ctx context.Context) error { return ctx.Err() }

// cachedObjects is objects for one volume written with the CACHE flag
// (Config.ObjectCache): its Flush is FLUSH_VDI for the volume.
type cachedObjects struct {
	objects
	vid uint32
}

// Flush sends FLUSH_VDI: the sheep pushes what its object cache holds of
// the VDI to every copy. INVALID_PARMS is a sheep without a cache, which
// dropped the CACHE flag and made every write stable when it acked it.
func (o cachedObjects) Flush(ctx context.Context) error {
	return o.with(ctx, func(co client.Objects) error {
		req := proto.NewRequest(proto.OpFlushVdi)
		req.Flags = proto.FlagCmdCache
		req.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(o.vid)})
		rsp, _, err := co.C.Call(ctx, &req, nil, nil)
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess && rsp.Result != proto.ResInvalidParms {
			return fmt.Errorf("flush vdi %x: %w", o.vid, rsp.Result)
		}
		return nil
	})
}

// lookup resolves a VDI name to its vid with GET_VDI_INFO and the 512-byte
// name+tag payload, as dog's find_vdi_name does: snapID 0 and an empty tag
// name the working VDI.
func (s *sheep) lookup(ctx context.Context, name string, snapID uint32, tag string) (uint32, error) {
	req := proto.NewRequest(proto.OpGetVdiInfo)
	req.SetVdi(proto.VdiArgs{SnapID: snapID})
	rsp, _, err := s.call(ctx, &req, proto.VdiName(name, tag, true), nil)
	if err != nil {
		return 0, fmt.Errorf("look up %s: %w", describe(name, snapID, tag), err)
	}
	return rsp.Vdi().VdiID, nil
}

// describe names a VDI or snapshot for messages.
func describe(name string, snapID uint32, tag string) string {
	switch {
	case snapID != 0:
		return fmt.Sprintf("%s (snapshot %d)", name, snapID)
	case tag != "":
		return fmt.Sprintf("%s (snapshot %q)", name, tag)
	}
	return name
}

// vdiInfo is what the listing learns about one live VDI.
type vdiInfo struct {
	Vid    uint32
	Name   string
	Tag    string
	SnapID uint32
	Snap   bool
	Size   uint64
	Ctime  time.Time
}

// inodeProbeSize is how much of an inode the listing reads: every header
// field UnmarshalHeader decodes.
const inodeProbeSize = 572

// listVdis reads the in-use and deleted bitmaps, then the header of every
// live VDI (in parallel), and returns them in vid order. Inodes with an
// empty name (deleted) are skipped.
func (s *sheep) listVdis(ctx context.Context) ([]vdiInfo, error) {
	inuse, err := s.bitmap(ctx, proto.OpReadVdis, "read the VDI bitmap")
	if err != nil {
		return nil, err
	}
	deleted, err := s.bitmap(ctx, proto.OpReadDelVdis, "read the deleted-VDI bitmap")
	if err != nil {
		return nil, err
	}
	var vids []uint32
	for w := 0; w+8 <= len(inuse); w += 8 {
		word := binary.LittleEndian.Uint64(inuse[w:]) &^ binary.LittleEndian.Uint64(deleted[w:])
		for word != 0 {
			vids = append(vids, uint32(w*8+bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	out := make([]vdiInfo, len(vids))
	err = fanout.Run(len(vids), 16, func(i int) error {
		vid := vids[i]
		buf := make([]byte, inodeProbeSize)
		r := proto.NewRequest(proto.OpReadObj)
		r.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(vid)})
		if _, _, err := s.call(ctx, &r, nil, buf); err != nil {
			return fmt.Errorf("read inode %x: %w", vid, err)
		}
		var ino proto.Inode
		if err := ino.UnmarshalHeader(buf); err != nil {
			return err
		}
		out[i] = vdiInfo{Vid: vid, Name: ino.Name, Tag: ino.Tag, SnapID: ino.SnapID, Snap: ino.IsSnapshot(),
			Size: ino.VdiSize, Ctime: time.Unix(proto.SheepTimeSeconds(ino.CreateTime), 0)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	live := out[:0]
	for _, v := range out {
		if v.Name != "" {
			live = append(live, v)
		}
	}
	return live, nil
}

func (s *sheep) bitmap(ctx context.Context, op proto.Opcode, what string) ([]byte, error) {
	req := proto.NewRequest(op)
	buf := make([]byte, proto.NrVdis/8)
	if _, _, err := s.call(ctx, &req, nil, buf); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return buf, nil
}

// splitAddr splits "host:port" for collie's -a and -p.
func splitAddr(addr string) (host, port string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, "7000"
	}
	return host, port
}
