package gateway

import (
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// A full or failing local disk is answered at once, not retried for 30 s
// as if it were a network failure (syscall.Errno implements net.Error);
// a failed dial is retried.
func TestRetryableErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, dialErr := net.Dial("tcp", addr)
	if dialErr == nil {
		t.Skip("a closed port accepted a connection")
	}
	local := func(kind proto.Result, errno syscall.Errno) error {
		// As store.ioError wraps a failed write of an object file.
		return fmt.Errorf("store: create %016x: %w: %w", uint64(0xfd32fc00000000), kind,
			&fs.PathError{Op: "write", Path: "/store/obj/00fd32fc00000000", Err: errno})
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"local disk full", local(proto.ResNoSpace, syscall.ENOSPC), false},
		{"local quota", local(proto.ResNoSpace, syscall.EDQUOT), false},
		{"local EIO", local(proto.ResEIO, syscall.EIO), false},
		{"peer's NO_SPACE", fmt.Errorf("127.0.0.1:7003: %w", proto.ResNoSpace), false},
		{"dial refused", fmt.Errorf("127.0.0.1:7003: %w", dialErr), true},
		{"connection lost", fmt.Errorf("127.0.0.1:7003: %w: %v", proto.ResNetworkError, dialErr), true},
		{"epoch mismatch", fmt.Errorf("%w", proto.ResOldNodeVer), true},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
