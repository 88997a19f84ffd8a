package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// vdi read/write report a failed object request as dog does: the object's
// line (dog_read_object, dog_write_object), then what failed; a failed
// update of the inode's table is the object's line alone.
func TestIoFailureNamesTheObject(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("127.0.0.1:7002: %w", e) }
	for _, c := range []struct {
		what string
		err  error
		msg  string
		code int
	}{
		{"Failed to write VDI", named(true, 0x00fd34af00000000, wrap(proto.ResNoSpace)),
			"Failed to write object 00fd34af00000000: Server has no space for new objects\nFailed to write VDI", exitFailure},
		{"Failed to write VDI", named(true, 0x007c2b2500000000, wrap(proto.ResHalt)),
			"Failed to write object 007c2b2500000000: IO has halted as there are not enough living nodes\nFailed to write VDI", exitFailure},
		{"Failed to write VDI", named(true, 0x807c2b2500000000, wrap(proto.ResNoSpace)),
			"Failed to write object 807c2b2500000000: Server has no space for new objects", exitFailure},
		{"Failed to read VDI", named(false, 0x007c2b2500000001, wrap(proto.ResEIO)),
			"Failed to read object 007c2b2500000001 I/O error\nFailed to read VDI", exitFailure},
		{"Failed to read VDI", named(false, 0x007c2b2500000001, wrap(client.ErrClosed)),
			"Failed to read object 007c2b2500000001\nFailed to read VDI", exitSysfail},
		{"Failed to write VDI", wrap(proto.ResNoSpace),
			"Failed to write VDI: Server has no space for new objects", exitFailure},
	} {
		var ee *exitError
		if err := ioFailure(c.what, c.err); !errors.As(err, &ee) || ee.msg != c.msg || ee.code != c.code {
			t.Errorf("ioFailure(%q, %v) = %v, want code %d %q", c.what, c.err, err, c.code, c.msg)
		}
	}
}
