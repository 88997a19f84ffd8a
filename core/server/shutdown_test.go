package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestShutdownAnswersInFlight: Shutdown takes no new connection, but a
// request already read (here a peer read parked until the node reaches
// the sender's newer epoch) is still answered before the connection
// closes, and Shutdown returns once it is.
func TestShutdownAnswersInFlight(t *testing.T) {
	s, c, vid := formatted(t)
	var epoch uint32
	s.cl.View(func(st *cluster.State) { epoch = st.Epoch() })

	req := proto.NewRequest(proto.OpReadPeer)
	req.Epoch = epoch + 1 // parked: this node is one epoch behind
	req.DataLength = 512
	req.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(vid)})
	answered := make(chan error, 1)
	var rsp proto.Response
	go func() {
		var err error
		rsp, _, err = c.Do(context.Background(), &req, nil, make([]byte, 512))
		answered <- err
	}()
	time.Sleep(100 * time.Millisecond) // the request is read and parked

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		t.Error("a new connection was accepted during Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case err := <-answered:
		t.Fatalf("the parked request was answered (%v) before the epoch came", err)
	default:
	}
	// The epoch arrives: the request runs and is answered.
	if res, err := s.cl.Propose(context.Background(), &cluster.Entry{Kind: cluster.KindEpoch, Nodes: []proto.Node{s.self}}); err != nil || res != proto.ResSuccess {
		t.Fatalf("new epoch: %v %v", res, err)
	}
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("in-flight request lost: %v", err)
		}
		if rsp.Result != proto.ResSuccess {
			t.Fatalf("in-flight request answered %v", rsp.Result)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request not answered")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last request")
	}
}

// TestShutdownDeadline: a request that does not finish in time is
// cancelled when Shutdown's context ends, and Shutdown reports it.
func TestShutdownDeadline(t *testing.T) {
	s, c, vid := formatted(t)
	var epoch uint32
	s.cl.View(func(st *cluster.State) { epoch = st.Epoch() })
	req := proto.NewRequest(proto.OpReadPeer)
	req.Epoch = epoch + 1
	req.DataLength = 512
	req.SetObj(proto.ObjArgs{Oid: proto.VidToVdiOid(vid)})
	go c.Do(context.Background(), &req, nil, make([]byte, 512))
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := s.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	if el := time.Since(began); el > 3*time.Second {
		t.Fatalf("Shutdown took %v past a 200ms deadline", el)
	}
}
