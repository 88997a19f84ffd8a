package vdi

import (
	"errors"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestNewRefusesUnsupportedRedundancy: erasure-coded policies (QEMU's
// redundancy=D:P) and more than 31 copies are INVALID_PARMS, and nothing is
// created; plain replication counts are accepted.
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
		{"ec42", 6, 0x22, false},
		{"ec21", 3, 0x11, false},
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
		if _, err := e.svc.Lookup(e.ctx, c.name, "", 0); c.ok != (err == nil) {
			t.Errorf("%s: lookup after create: %v", c.name, err)
		}
	}
}
