package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// logLevelNames are Sheepdog's log levels (syslog's), indexed by number.
var logLevelNames = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// logLevelNumber is dog's loglevel_str2num: the exact (case-sensitive)
// name's number, or -1.
func logLevelNumber(name string) int32 {
	for i, n := range logLevelNames {
		if n == name {
			return int32(i)
		}
	}
	return -1
}

// logLevelName is dog's loglevel_to_str.
func logLevelName(level int32) string {
	if level >= 0 && int(level) < len(logLevelNames) {
		return logLevelNames[level]
	}
	return "unknown loglevel"
}

// writeLogLevels is dog's dump_loglevels: "name\t(number)" per level.
func writeLogLevels(w io.Writer) {
	for i, n := range logLevelNames {
		fmt.Fprintf(w, "%s\t(%d)\n", n, i)
	}
}

// nodeLog is "node log level {set <level>|get|list}" on the sheep named by
// -a/-p. As in dog, whose sd_info writes to stderr, the level and the
// list are printed on stderr, and a failed request prints "Failed to
// execute request".
func nodeLog(s *session, args []string) error {
	if args[0] != "level" {
		return &exitError{code: exitFailure, usage: true}
	}
	if len(args) < 2 {
		return &exitError{code: exitUsage, usage: true}
	}
	switch args[1] {
	case "set":
		if len(args) < 3 || args[2] == "" {
			return &exitError{code: exitUsage, usage: true}
		}
		return nodeLogLevelSet(s, args[2])
	case "get":
		return nodeLogLevelGet(s)
	case "list":
		writeLogLevels(s.stderr)
		return nil
	}
	return &exitError{code: exitFailure, usage: true}
}

func nodeLogLevelSet(s *session, name string) error {
	level := logLevelNumber(name)
	if level < 0 {
		fmt.Fprintf(s.stderr, "invalid loglevel: %s\navailable loglevels:\n", name)
		writeLogLevels(s.stderr)
		return &exitError{code: exitFailure}
	}
	req := proto.NewRequest(proto.OpSetLoglevel)
	data := binary.LittleEndian.AppendUint32(nil, uint32(level))
	rsp, _, err := s.do(&req, data, nil)
	if err != nil {
		return requestFailed(err)
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Failed to execute request")
	}
	return nil
}

func nodeLogLevelGet(s *session) error {
	req := proto.NewRequest(proto.OpGetLoglevel)
	buf := make([]byte, 4)
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return requestFailed(err)
	}
	if rsp.Result != proto.ResSuccess || n < 4 {
		return failf(exitFailure, "Failed to execute request")
	}
	level := int32(binary.LittleEndian.Uint32(buf))
	fmt.Fprintf(s.stderr, "%s (%d)\n", logLevelName(level), level)
	return nil
}

// requestFailed adds dog's "Failed to execute request" under a transport
// error, keeping its exit code.
func requestFailed(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.code, msg: ee.msg + "\nFailed to execute request"}
	}
	return fmt.Errorf("%w\nFailed to execute request", err)
}
