package bufpool

import "testing"

func TestClasses(t *testing.T) {
	for _, c := range []struct{ n, cap int }{
		{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 8192}, {1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20}, {12587576, 16 << 20}, {1 << 30, 1 << 30}, {1<<30 + 1, 1<<30 + 1},
	} {
		b := Get(c.n)
		if len(*b) != c.n || cap(*b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", c.n, len(*b), cap(*b), c.n, c.cap)
		}
		Put(b)
	}
}

// TestReuse: a buffer put back is handed out again for any length of its
// class, and a foreign-sized buffer is not pooled.
func TestReuse(t *testing.T) {
	b := Get(5000)
	(*b)[0] = 0x5a
	Put(b)
	odd := make([]byte, 5000)
	Put(&odd) // dropped: capacity is not a class
	got := Get(8000)
	if cap(*got) != 8192 || len(*got) != 8000 {
		t.Fatalf("len %d cap %d", len(*got), cap(*got))
	}
}

func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	Put(Get(1 << 20))
	if n := testing.AllocsPerRun(100, func() { Put(Get(1 << 20)) }); n > 0 {
		t.Fatalf("Get/Put allocates %.1f times", n)
	}
}
