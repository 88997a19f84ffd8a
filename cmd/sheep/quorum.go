package main

import (
	"context"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
)

// quorumObjects is the object layer of the NBD front-end: the gateway,
// with writes gated on the cluster's quorum as the native protocol's are
// (cluster.AwaitQuorum in core/server's handler).
type quorumObjects struct {
	*gateway.Gateway
	cl cluster.Driver
}

func (q quorumObjects) WriteObject(ctx context.Context, oid uint64, off int64, data []byte, flags uint16) error {
	if err := cluster.AwaitQuorum(ctx, q.cl); err != nil {
		return err
	}
	return q.Gateway.WriteObject(ctx, oid, off, data, flags)
}

func (q quorumObjects) CreateAndWrite(ctx context.Context, oid, cowFrom uint64, off int64, data []byte, flags uint16) error {
	if err := cluster.AwaitQuorum(ctx, q.cl); err != nil {
		return err
	}
	return q.Gateway.CreateAndWrite(ctx, oid, cowFrom, off, data, flags)
}

func (q quorumObjects) RemoveObject(ctx context.Context, oid uint64) error {
	if err := cluster.AwaitQuorum(ctx, q.cl); err != nil {
		return err
	}
	return q.Gateway.RemoveObject(ctx, oid)
}

func (q quorumObjects) PunchObject(ctx context.Context, oid uint64, off, n int64, flags uint16) error {
	if err := cluster.AwaitQuorum(ctx, q.cl); err != nil {
		return err
	}
	return q.Gateway.PunchObject(ctx, oid, off, n, flags)
}
