package tests

import (
	"strings"
	"testing"
)

// cluster format agrees with the nodes' vnode strategy as dog's does: a
// sheep started with -V (fixed vnodes) is formatted only with -V, one
// started without only without it, before and after a first format.
func TestFormatFollowsVnodeStrategy(t *testing.T) {
	parallel(t)
	const needV = "Need to specify the option of '-V', because there are vnode strategy of sheep is fixed in the cluster"
	const noV = "Can not apply the option of '-V', because there are vnode strategy of sheep is auto in the cluster"
	expect := func(s *Sheep, want string, args ...string) {
		t.Helper()
		r := s.collie(t, nil, append([]string{"cluster", "format", "-c", "1"}, args...)...)
		if r.Code != 1 || !strings.Contains(r.Stderr, want) {
			t.Fatalf("format %v on %s: exit %d, stderr %q; want 1 and %q", args, s.Addr(), r.Code, r.Stderr, want)
		}
	}
	fixed := startSheep(t, "-n", "-V", "100")
	expect(fixed, needV)
	fixed.must(t, nil, "cluster", "format", "-V", "-c", "1")
	expect(fixed, needV)

	auto := startSheep(t, "-n")
	expect(auto, noV, "-V")
	auto.must(t, nil, "cluster", "format", "-c", "1")
	expect(auto, noV, "-V")
}
