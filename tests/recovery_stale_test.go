package tests

import (
	"bytes"
	"crypto/rand"
	"strconv"
	"testing"
)

// TestRecoveryNewestStaleCopyWins replays Sheepdog's functional test 028:
// A and B (copies=2) hold the VDI; C joins and A is killed, D joins and B
// is killed, and the VDI is rewritten on C and D. Then A comes back and C
// is killed at once, B comes back and D is killed at once. When C leaves,
// nobody holds some objects live any more: A's copies missed the rewrite
// (set aside, current in epoch 2), D's were no target in the epoch A came
// back in (set aside as leftovers, current in epoch 5). Recovery must take
// the newest stale copy (D's) on every node, not each node its own: at the
// end A and B both hold the rewritten data, object by object.
func TestRecoveryNewestStaleCopyWins(t *testing.T) {
	parallel(t)
	const prefix, size, objSize = "0015d167", 64 << 20, 4 << 20
	sheeps := startCluster(t, 2)
	a, b := sheeps[0], sheeps[1]
	a.must(t, nil, "cluster", "format", "--copies=2")
	old := seedVdi(t, a, "Alice", size)

	// A must keep every copy it holds until it is killed: with recovery
	// on, the epoch of C's join could move some to C and drop them from A
	// first (as fast as recovery is, it sometimes did).
	a.must(t, nil, "cluster", "recover", "disable")
	c := startSheep(t, "-z", "2", "--join", b.Addr())
	waitNodes(t, c, 3)
	a.Kill()
	waitNodes(t, c, 2)
	c.must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, []*Sheep{b, c}, prefix, 2)
	d := startSheep(t, "-z", "3", "--join", c.Addr())
	waitNodes(t, d, 3)
	b.Kill()
	waitNodes(t, d, 2)
	waitRecovered(t, []*Sheep{c, d}, prefix, 2)

	data := make([]byte, size)
	rand.Read(data)
	c.must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(size))
	if got := objectFiles(t, a, prefix); len(got) != size/objSize || !bytes.Equal(got[0], old[:objSize]) {
		t.Fatalf("A holds %d objects of the old data, want all %d: the test proves nothing", len(got), size/objSize)
	}

	a.start("-z", "0", "--join", d.Addr())
	waitNodes(t, d, 3)
	c.Kill()
	waitNodes(t, d, 2)
	waitRecovered(t, []*Sheep{a, d}, prefix, 2)
	b.start("-z", "1", "--join", a.Addr())
	waitNodes(t, a, 3)
	d.Kill()
	waitNodes(t, a, 2)
	waitRecovered(t, []*Sheep{a, b}, prefix, 2)

	for _, s := range []*Sheep{a, b} {
		files := objectFiles(t, s, prefix)
		if len(files) != size/objSize {
			t.Errorf("%s holds %d data objects, want %d", s.Addr(), len(files), size/objSize)
		}
		for idx, f := range files {
			if !bytes.Equal(f, data[idx*objSize:(idx+1)*objSize]) {
				t.Errorf("%s: object %d is not the rewritten data (the old: %v)", s.Addr(), idx, bytes.Equal(f, old[idx*objSize:(idx+1)*objSize]))
			}
		}
		mustRead(t, s, "Alice", data, "through "+s.Addr()+" at the end")
	}
}
