package main

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// exitMinusOne is the status dog exits with when a command function
// returns -1 (node vnodes set's failure).
const exitMinusOne = 255

// nodeVnodes is "node vnodes set <num>" on the sheep named by -a/-p (dog's
// node_vnodes_set): a count outside 1..65535 is refused before any
// request with exit 64, a refused or failed request prints "Failed to
// execute request" and exits 255.
func nodeVnodes(s *session, args []string) error {
	if args[0] != "set" {
		return &exitError{code: exitFailure, usage: true}
	}
	if len(args) < 2 {
		return &exitError{code: exitUsage, usage: true}
	}
	v := args[1]
	n, err := strconv.ParseInt(strings.TrimLeft(v, " \t\n\v\f\r"), 10, 64)
	if err != nil || n < 1 || n > 65535 {
		return failf(exitUsage, "Invalid number of vnodes '%s': must be an integer between 1 and 65535", v)
	}
	req := proto.NewRequest(proto.OpSetVnodes)
	// dog sends sizeof(int *) bytes: the int32 and four unused.
	data := binary.LittleEndian.AppendUint32(nil, uint32(n))
	data = append(data, 0, 0, 0, 0)
	rsp, _, err := s.do(&req, data, nil)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return &exitError{code: exitMinusOne, msg: ee.msg + "\nFailed to execute request"}
		}
		return failf(exitMinusOne, "%v\nFailed to execute request", err)
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitMinusOne, "Failed to execute request")
	}
	return nil
}
