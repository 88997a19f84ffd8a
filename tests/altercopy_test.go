package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// vdiCopies counts, for every object of vid (its inode and data
// objects), the store dirs of sheeps holding it.
func vdiCopies(t *testing.T, sheeps []*Sheep, vid uint32) map[string]int {
	t.Helper()
	out := objectCopies(t, sheeps, fmt.Sprintf("00%06x", vid))
	for k, v := range objectCopies(t, sheeps, fmt.Sprintf("80%06x", vid)) {
		out[k] = v
	}
	return out
}

// `cluster alter-copy -c 2` on a copies=3 cluster leaves exactly two
// copies of every object once recovery is done, `-c 3` makes three again,
// and `vdi alter-copy` does it for one VDI; data reads back identical
// throughout, and vdi list shows the new level.
func TestAlterCopy(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 4)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=3")
	a := seedVdi(t, sheeps[0], "A", 12<<20)
	b := seedVdi(t, sheeps[0], "B", 8<<20)
	va, vb := proto.VdiNameHash("A"), proto.VdiNameHash("B")

	wait := func(want map[uint32]int, when string) {
		t.Helper()
		waitFor(t, 60, when, func() (bool, string) {
			for vid, n := range want {
				got := vdiCopies(t, sheeps, vid)
				if len(got) == 0 {
					return false, fmt.Sprintf("vdi %x has no objects", vid)
				}
				for oid, c := range got {
					if c != n {
						return false, fmt.Sprintf("object %s has %d copies, want %d", oid, c, n)
					}
				}
			}
			return true, ""
		})
		for _, s := range sheeps {
			mustRead(t, s, "A", a, when)
			mustRead(t, s, "B", b, when)
		}
	}
	copiesColumn := func(name string) string {
		for _, line := range strings.Split(sheeps[1].must(t, nil, "vdi", "list", "-r"), "\n") {
			if f := strings.Fields(line); len(f) > 8 && f[0] == "=" && f[1] == name {
				return f[8]
			}
		}
		return ""
	}

	out := sheeps[0].must(t, nil, "cluster", "alter-copy", "-c", "2", "-f")
	if !strings.Contains(out, "set to 2, the old one was 3") {
		t.Fatalf("cluster alter-copy said %q", out)
	}
	wait(map[uint32]int{va: 2, vb: 2}, "after cluster alter-copy -c 2")
	if c := copiesColumn("A"); c != "2" {
		t.Errorf("vdi list shows copies %q for A after alter-copy -c 2", c)
	}
	if r := sheeps[0].collie(t, nil, "cluster", "alter-copy", "-c", "2", "-f"); r.Code == 0 || !strings.Contains(r.Stderr, "already set to 2") {
		t.Errorf("a second alter-copy -c 2: exit %d, %q", r.Code, r.Stderr)
	}

	sheeps[2].must(t, nil, "cluster", "alter-copy", "-c", "3", "-f")
	wait(map[uint32]int{va: 3, vb: 3}, "after cluster alter-copy -c 3")

	out = sheeps[0].must(t, nil, "vdi", "alter-copy", "-c", "2", "-f", "B")
	if !strings.Contains(out, "B's redundancy level is set to 2, the old one was 3") {
		t.Fatalf("vdi alter-copy said %q", out)
	}
	wait(map[uint32]int{va: 3, vb: 2}, "after vdi alter-copy -c 2 B")
	if ca, cb := copiesColumn("A"), copiesColumn("B"); ca != "3" || cb != "2" {
		t.Errorf("vdi list shows copies %q for A and %q for B", ca, cb)
	}
	// A VDI that shares objects with a snapshot is refused, as dog does.
	sheeps[0].must(t, nil, "vdi", "snapshot", "A")
	if r := sheeps[0].collie(t, nil, "vdi", "alter-copy", "-c", "2", "-f", "A"); r.Code == 0 || !strings.Contains(r.Stderr, "Only standalone vdi") {
		t.Errorf("alter-copy of a VDI with a snapshot: exit %d, %q", r.Code, r.Stderr)
	}
	sheeps[0].must(t, nil, "cluster", "check")
}

// waitFor polls cond every 200 ms for up to secs seconds and fails with
// its last reason, naming when.
func waitFor(t *testing.T, secs int, when string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %d s", when, why, secs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
