package vdi

import (
	"errors"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestNewRefusesUnsupportedRedundancy: more than 31 copies and copy
// policies that are no erasure code are INVALID_PARMS, and nothing is
// created; replication counts and erasure codes (QEMU's redundancy=D:P)
// are accepted, with nr_copies d+p whatever the request said.
func TestNewRefusesUnsupportedRedundancy(t *testing.T) {
	e := newEnv(t, 0)
	for _, c := range []struct {
		name           string
		copies, policy uint8
		ok             bool
	}{
		{"r1", 1, 0, true},
		{"r31", 31, 0, true},
		{"r32", 32, 0, false},
		{"ec42", 6, 0x22, true},
		{"ec21", 1, 0x11, true},
		{"ec16-15", 31, 0x8f, true},
		{"ec3-1", 4, 0x31, false}, // d = 6
		{"ec4-0", 4, 0x20, false}, // p = 0
		// copies 0 means the cluster's copies and policy (replication here).
		{"default", 0, 0x22, true},
	} {
		_, err := e.svc.New(e.ctx, NewParams{Name: c.name, Size: 1 << 20, Copies: c.copies, CopyPolicy: c.policy})
		if c.ok != (err == nil) {
			t.Errorf("%s (copies %d policy %#x): err %v", c.name, c.copies, c.policy, err)
		}
		if !c.ok && !errors.Is(err, proto.ResInvalidParms) {
			t.Errorf("%s: %v, want INVALID_PARMS", c.name, err)
		}
		info, err := e.svc.Lookup(e.ctx, c.name, "", 0)
		if c.ok != (err == nil) {
			t.Errorf("%s: lookup after create: %v", c.name, err)
		}
		if err == nil && c.policy != 0 && c.copies != 0 {
			if want := c.policy>>4*2 + c.policy&15; info.Copies != want {
				t.Errorf("%s: copies %d, want %d", c.name, info.Copies, want)
			}
		}
	}
}
