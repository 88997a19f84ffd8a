package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cachedDataBytes returns how many bytes of s's data objects (names
// 00...) are in the page cache, by fincore, and their total size.
func cachedDataBytes(t *testing.T, s *Sheep) (cached, total int64) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.Dir, "obj", "00*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s holds no data object (%v)", s.Addr(), err)
	}
	for _, f := range files {
		out := tool(t, "fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", f)
		fields := strings.Fields(out)
		if len(fields) != 2 {
			t.Fatalf("fincore %s: %q", f, out)
		}
		res, _ := strconv.ParseInt(fields[0], 10, 64)
		size, _ := strconv.ParseInt(fields[1], 10, 64)
		cached, total = cached+res, total+size
	}
	return cached, total
}

// TestDirectIO: which writes skip the page cache (fincore on every copy).
// 8 MiB written through NBD with 1 MiB requests into a new VDI and
// flushed are first writes: with -D (Sheepdog's direct IO for the backend
// store) and by default (--direct=fresh) under an eighth of it is cached,
// with --direct=off most of it. Overwritten, they stay out of the cache
// with -D and go through it by default. With -D, the data reads back, and
// still reads back through every node after all were killed and
// restarted.
func TestDirectIO(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io", "fincore")
	for _, mode := range []string{"-D", "--direct=fresh", "--direct=off"} {
		addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
		sheeps := startNBDCluster(t, 3, 3, addr, mode)
		uri := nbdURI(addr, "bench")
		var cmds []string
		for off := 0; off < 8; off++ {
			cmds = append(cmds, "write -P 0x5a "+strconv.Itoa(off)+"M 1M")
		}
		check := func(what string, wantCached bool) {
			t.Helper()
			for i, s := range sheeps {
				cached, total := cachedDataBytes(t, s)
				t.Logf("%s, %s, node %d: %d of %d bytes of data objects in the page cache", mode, what, i, cached, total)
				if !wantCached && cached > total/8 {
					t.Fatalf("%s, %s: node %d has %d of %d bytes of its data objects in the page cache", mode, what, i, cached, total)
				}
				if wantCached && cached < total/2 {
					t.Fatalf("%s, %s: node %d has only %d of %d bytes of its data objects in the page cache", mode, what, i, cached, total)
				}
			}
		}
		qemuIOWith(t, []string{"-t", "writeback"}, uri, append(cmds, "flush")...)
		check("first writes", mode == "--direct=off")
		if mode == "--direct=off" {
			continue
		}
		qemuIOWith(t, []string{"-t", "writeback"}, uri, append(cmds, "flush")...)
		check("overwrites", mode == "--direct=fresh")
		if mode != "-D" {
			continue
		}
		qemuIO(t, uri, "read -P 0x5a 0 8M")
		addrs := []string{addr, "127.0.0.1:" + strconv.Itoa(freeTCPPort(t)), "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))}
		for i, s := range sheeps {
			if log, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log")); !strings.Contains(string(log), "direct IO (-D)") {
				t.Errorf("node %d does not log that it writes with direct IO", i)
			}
		}
		// Restarted (without -D: what was written direct is plain data),
		// every node serving NBD reads its own copies back.
		restartAll(t, sheeps, addrs)
		for _, a := range addrs {
			qemuIO(t, nbdURI(a, "bench"), "read -P 0x5a 0 8M")
		}
		noBadCopies(t, sheeps)
	}
}
