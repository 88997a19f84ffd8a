package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// outsider is a Local driver with a membership this node may be left out
// of (declared dead by the others while it was cut off).
type outsider struct {
	*cluster.Local
	out atomic.Bool
}

func (o *outsider) Members() []proto.Node                              { return nil }
func (o *outsider) Quorum() bool                                       { return true }
func (o *outsider) WaitQuorum(context.Context) error                   { return nil }
func (o *outsider) Rejoining() bool                                    { return false }
func (o *outsider) WaitingForJoin() bool                               { return false }
func (o *outsider) ForceRecover(context.Context) ([]proto.Node, error) { return nil, nil }
func (o *outsider) Leave()                                             {}
func (o *outsider) Outside() bool                                      { return o.out.Load() }

// WaitMember gives up at once (the real wait is bounded by memberWait).
func (o *outsider) WaitMember(context.Context) error {
	if o.out.Load() {
		return errors.New("still outside")
	}
	return nil
}

// TestOutsideNode: a node the current epoch leaves out answers
// WAIT_FOR_JOIN (status and cluster operations), and closes the
// connection of object I/O instead of answering it (QEMU's only retry is
// a reconnect that resends what was in flight); once it is a member
// again, the same requests succeed.
func TestOutsideNode(t *testing.T) {
	var o *outsider
	s := startSheepWith(t, func(l *cluster.Local) cluster.Driver { o = &outsider{Local: l}; return o })
	c := s.dial(t)
	makeFS(t, c, 1, "plain")
	rsp := newVdi(t, c, "Alice", 8<<20, 0, 0)
	expect(t, "new vdi", rsp, proto.ResSuccess)
	vid := rsp.Vdi().VdiID
	inode := proto.VidToVdiOid(vid)

	o.out.Store(true)
	rsp, _ = do(t, c, statCluster(0), nil, make([]byte, 4096))
	expect(t, "stat cluster outside", rsp, proto.ResWaitForJoin)
	info := proto.NewRequest(proto.OpGetVdiInfo)
	name := make([]byte, proto.MaxVdiLen+proto.MaxVdiTagLen)
	copy(name, "Alice")
	rsp, _ = do(t, c, info, name, nil)
	expect(t, "vdi info outside", rsp, proto.ResWaitForJoin)
	r := objReq(proto.OpReadObj, inode, 0)
	if _, _, err := c.Do(context.Background(), &r, nil, make([]byte, 512)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("object read outside the cluster: %v, want the connection closed", err)
	}

	o.out.Store(false)
	c = s.dial(t)
	rsp, _ = readObj(t, c, inode, 0, 512)
	expect(t, "object read as a member", rsp, proto.ResSuccess)
}
