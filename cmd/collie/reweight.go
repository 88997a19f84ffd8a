package main

import (
	"errors"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// clusterReweight is dog's `cluster reweight`: REWEIGHT to the sheep,
// which has every node weigh its store again; a node whose space changed
// by 1% or more gets an epoch with its new space (and, with automatic
// vnodes, every node its new vnode count), and recovery rebalances. As
// dog's send_light_req it prints nothing on success and exits 1 on any
// failure.
func clusterReweight(s *session, _ []string) error {
	req := proto.NewRequest(proto.OpReweight)
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			ee.code = exitFailure
		}
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Response's result: %s", rsp.Result)
	}
	return nil
}
