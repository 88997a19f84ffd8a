package tests

// The object cache (sheep -w size=..., core/objcache): QEMU's driver flows
// with the cache on the node QEMU talks to, in a 3-node copies=3 cluster;
// kill -9 after a flush; a snapshot through another node while dirty
// objects sit in the cache; a cache smaller than the working set under
// random NBD writes; collie's vdi cache commands.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startCacheCluster starts n sheeps (zones 0..n-1) joined to the first,
// node 0 with first's extra options, and formats them with copies.
func startCacheCluster(t *testing.T, n, copies int, first ...string) []*Sheep {
	t.Helper()
	var sheeps []*Sheep
	for i := 0; i < n; i++ {
		args := []string{"-z", strconv.Itoa(i)}
		if i == 0 {
			args = append(args, first...)
		} else {
			args = append(args, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, args...))
	}
	for _, s := range sheeps {
		waitNodes(t, s, n)
	}
	sheeps[0].must(t, nil, "cluster", "format", "--copies="+strconv.Itoa(copies))
	return sheeps
}

// storeDigest is a digest of every object file of s's store (names and
// contents; not the store's dot files).
func storeDigest(t *testing.T, s *Sheep) string {
	t.Helper()
	h := sha256.New()
	files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "*"))
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), ".") {
			continue // the store's own files (.health is rewritten all the time)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a directory (stale copies) or gone meanwhile
		}
		fmt.Fprintf(h, "%s %x\n", filepath.Base(f), sha256.Sum256(b))
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// storeListing lists s's object files with their sizes and times, for a
// failure message.
func storeListing(s *Sheep) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(s.Dir, "obj", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "\n  %s %d %s", filepath.Base(f), fi.Size(), fi.ModTime().Format("15:04:05.000"))
		}
	}
	return b.String()
}

// dirUsage is the disk space the files under dir take.
func dirUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

// TestObjectCacheQemu: with -w size=256M on the node QEMU talks to,
// QEMU's cached writes (an overwrite of an allocated object, a new
// object and its index entry) change no node's store until FLUSH_VDI,
// which then succeeds (QEMU keeps flushing); a read through another node
// sees the old data before and the new after. A snapshot taken through
// another node while dirty objects sit in the cache contains them, and
// after kill -9 of the caching sheep nothing flushed is lost.
func TestObjectCacheQemu(t *testing.T) {
	parallel(t)
	sheeps := startCacheCluster(t, 3, 3, "-w", "size=256M")
	s0, s1, s2 := sheeps[0], sheeps[1], sheeps[2]
	old := seedVdi(t, s1, "c1", 12<<20) // three objects, stable everywhere
	d := newQemuDriver(t, s0)
	img := d.mustOpen("c1")
	// Recovery after the joins may still be settling copies: start from
	// stores that stay unchanged for a second.
	digests := func() []string { return []string{storeDigest(t, s0), storeDigest(t, s1), storeDigest(t, s2)} }
	before := digests()
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(time.Second)
		now := digests()
		if slices.Equal(now, before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stores keep changing with no client writing")
		}
		before = now
	}

	want := bytes.Clone(old)
	write := func(off int, data []byte) {
		t.Helper()
		img.mustWrite(uint64(off), data)
		copy(want[off:], data)
	}
	write(4096, bytes.Repeat([]byte{0xa1}, 64<<10))    // into object 0
	write(5<<20+512, bytes.Repeat([]byte{0xb2}, 8192)) // into object 1, unaligned
	img.resize(16 << 20)                               // the header, cached too
	fresh := bytes.Repeat([]byte{0xc3}, 1<<20)
	img.mustWrite(13<<20, fresh) // object 3: created, and its index entry
	for i, s := range sheeps {
		if storeDigest(t, s) != before[i] {
			t.Fatalf("node %d's store changed before the flush: %s", i, storeListing(s))
		}
	}
	if got := collieReadAt(t, s1, "c1", 0, len(old)); !bytes.Equal(got, old) {
		t.Fatal("another node reads other than the flushed state before the flush")
	}
	if got := img.mustRead(4096, 64<<10); !bytes.Equal(got, want[4096:4096+64<<10]) {
		t.Fatal("QEMU does not read back its cached write")
	}
	if r := s0.must(t, nil, "vdi", "cache", "info"); !strings.Contains(r, "c1") {
		t.Fatalf("vdi cache info does not list c1:\n%s", r)
	}

	if res, err := img.flush(); err != nil || res != sdResSuccess {
		t.Fatalf("FLUSH_VDI: result %#x err %v, want SUCCESS", res, err)
	}
	if img.cacheFlag() != sdFlagCache {
		t.Fatal("QEMU left CACHE mode after a successful flush")
	}
	want = append(want, make([]byte, 4<<20)...)
	copy(want[13<<20:], fresh)
	for i, s := range sheeps {
		if storeDigest(t, s) == before[i] {
			t.Fatalf("node %d's store did not change at the flush", i)
		}
		if got := collieReadAt(t, s, "c1", 0, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("node %d reads other data after the flush", i)
		}
	}
	if c := objectCopies(t, sheeps, sdOidHex(sdDataOid(img.vid(), 3))); c[sdOidHex(sdDataOid(img.vid(), 3))] != 3 {
		t.Fatalf("the object created in the cache has %v copies after the flush, want 3", c)
	}

	// Dirty again, then a snapshot through node 1: it holds the writes.
	write(8<<20, bytes.Repeat([]byte{0xd4}, 4<<20))
	s1.must(t, nil, "vdi", "snapshot", "-s", "snap1", "c1")
	if got := collieReadAt(t, s2, "c1", 0, len(want), "-s", "snap1"); !bytes.Equal(got, want) {
		t.Fatal("the snapshot lacks writes that were in the cache when it was taken")
	}

	// kill -9: what was flushed (by FLUSH_VDI and by the snapshot) stays.
	s0.Kill()
	if got := collieReadAt(t, s1, "c1", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("flushed data lost with the caching sheep")
	}
	// A restart drops the cache dir: nothing from before the crash is
	// pushed later.
	s0.start("-z", "0", "-w", "size=256M")
	waitRunning(t, s0)
	if ents, _ := os.ReadDir(filepath.Join(s0.Dir, "cache")); len(ents) != 0 {
		t.Fatalf("the restarted sheep kept %d cache dirs", len(ents))
	}
}

// resize is qemu-img resize (docs/qemu-client.md §8.10): vdi_size in
// the header, then the whole header with WRITE_OBJ on a side connection.
func (img *qemuImage) resize(size uint64) {
	img.t.Helper()
	img.mu.Lock()
	sdPut64(img.hdr[536:], size)
	hdr := bytes.Clone(img.hdr)
	img.mu.Unlock()
	v := sdInode(hdr)
	rsp, _ := img.d.side(sdObjHdr{opcode: sdOpWriteObj, flags: sdFlagWrite | img.cacheFlag(), dlen: sdInodeHeaderSize,
		oid: sdVdiOid(v.vid()), copies: v.nrCopies()}.bytes(), hdr, 0)
	if rsp.result() != sdResSuccess {
		img.t.Fatalf("resize: header write result %#x", rsp.result())
	}
}

// TestObjectCacheSmall: a 32 MiB cache on the NBD node against 256 MiB of
// random writes: the cache dir never takes more than 32 MiB, and after
// the final FLUSH another node reads every write.
func TestObjectCacheSmall(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io")
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startCacheCluster(t, 3, 3, "-w", "size=32M", "--nbd", addr)
	const size, bs = 256 << 20, 64 << 10
	sheeps[0].must(t, nil, "vdi", "create", "small", strconv.Itoa(size))
	cacheDir := filepath.Join(sheeps[0].Dir, "cache")

	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if u := dirUsage(cacheDir); u > peak.Load() {
				peak.Store(u)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	// Every 64 KiB block once, in random order, each with its own pattern.
	order := rand.Perm(size / bs)
	var cmds []string
	for _, i := range order {
		cmds = append(cmds, fmt.Sprintf("write -q -P %d %d %d", i%251+1, i*bs, bs))
	}
	cmds = append(cmds, "flush")
	qemuIOWith(t, []string{"-t", "writeback"}, nbdURI(addr, "small"), cmds...)
	close(stop)
	<-done
	if p := peak.Load(); p > 32<<20 {
		t.Fatalf("the cache dir took %d bytes, more than its 32 MiB", p)
	}
	t.Logf("cache dir peak %.1f MiB", float64(peak.Load())/(1<<20))
	got := []byte(sheeps[1].must(t, nil, "vdi", "read", "small", "0", strconv.Itoa(size)))
	for i := 0; i < size/bs; i++ {
		if !bytes.Equal(got[i*bs:(i+1)*bs], bytes.Repeat([]byte{byte(i%251 + 1)}, bs)) {
			t.Fatalf("block %d read through another node differs after the flush", i)
		}
	}
}

// TestObjectCacheCollie: collie's vdi cache commands and node info with
// the cache on, and a clear refusal of bad -w options.
func TestObjectCacheCollie(t *testing.T) {
	parallel(t)
	s := startSheep(t, "-w", "size=64M")
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "v", "16M")
	d := newQemuDriver(t, s)
	img := d.mustOpen("v")
	img.mustWrite(0, bytes.Repeat([]byte{7}, 1<<20))
	info := s.must(t, nil, "vdi", "cache", "info")
	if !strings.Contains(info, "Cache size 64 MB") || !strings.Contains(info, "v\t") {
		t.Fatalf("vdi cache info:\n%s", info)
	}
	if ni := s.must(t, nil, "node", "info"); !strings.Contains(ni, "Object cache on node 0") || !strings.Contains(ni, "size 64 MB") {
		t.Fatalf("node info does not show the cache:\n%s", ni)
	}
	if ns := s.must(t, nil, "node", "stat"); !strings.Contains(ns, "Object cache: size 64 MB") {
		t.Fatalf("node stat does not show the cache:\n%s", ns)
	}
	s.must(t, nil, "vdi", "cache", "flush", "v")
	if got := collieReadAt(t, s, "v", 0, 1<<20); !bytes.Equal(got, bytes.Repeat([]byte{7}, 1<<20)) {
		t.Fatal("vdi cache flush did not push")
	}
	s.must(t, nil, "vdi", "cache", "delete", "v")
	if info := s.must(t, nil, "vdi", "cache", "info"); strings.Contains(info, "v\t") {
		t.Fatalf("vdi cache delete left the VDI cached:\n%s", info)
	}
	img.mustWrite(0, bytes.Repeat([]byte{8}, 4096))
	s.must(t, []byte("yes\n"), "vdi", "cache", "purge")
	if got := collieReadAt(t, s, "v", 0, 4096); !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatal("purge pushed the dirty write")
	}
	img.mustClose()

	r := run(t, nil, bin("sheep"), "-f", "-w", "size=1K", t.TempDir())
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "size must be between between 10M and") {
		t.Fatalf("sheep -w size=1K: exit %d, %s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestObjectCacheDirectIO: -w size=SIZE,directio opens the cache files
// with O_DIRECT (seen in the sheep's /proc fdinfo), and unaligned cached
// writes read back from the cache, a flush pushes them, and a write after
// the flush stays in the cache only.
func TestObjectCacheDirectIO(t *testing.T) {
	parallel(t)
	s := startSheep(t, "-w", "size=64M,directio")
	s.must(t, nil, "cluster", "format", "-c", "1")
	s.must(t, nil, "vdi", "create", "v", "16M")
	d := newQemuDriver(t, s)
	img := d.mustOpen("v")
	defer img.mustClose()
	data := bytes.Repeat([]byte("directio"), 70000) // 560000 bytes, not block-aligned
	const off = 4<<20 - 1234                        // across two objects
	img.mustWrite(off, data)
	if got := img.mustRead(off, len(data)); !bytes.Equal(got, data) {
		t.Fatal("a cached unaligned write did not read back")
	}
	if info := s.must(t, nil, "vdi", "cache", "info"); !strings.Contains(info, "directio") || strings.Contains(info, "non-directio") {
		t.Fatalf("vdi cache info does not say directio:\n%s", info)
	}
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	direct := 0
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil || !strings.Contains(target, filepath.Join(s.Dir, "cache")) {
			continue
		}
		fdinfo, err := os.ReadFile(strings.Replace(fd, "/fd/", "/fdinfo/", 1))
		if err != nil {
			continue
		}
		var flags int64
		for _, line := range strings.Split(string(fdinfo), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&syscall.O_DIRECT == 0 {
			t.Fatalf("cache file %s open without O_DIRECT (flags %o)", target, flags)
		}
		direct++
	}
	if direct == 0 {
		t.Fatalf("no cache file open under %s", filepath.Join(s.Dir, "cache"))
	}
	// Flushed, then a second write held in the cache only: a purge drops
	// the cache, so the replicas show the first write and not the second.
	s.must(t, nil, "vdi", "cache", "flush", "v")
	second := bytes.Repeat([]byte{0xd1}, 5000)
	const off2 = 9<<20 + 77
	img.mustWrite(off2, second)
	if got := img.mustRead(off2, len(second)); !bytes.Equal(got, second) {
		t.Fatal("the second cached write did not read back")
	}
	s.must(t, []byte("yes\n"), "vdi", "cache", "purge")
	if got := collieReadAt(t, s, "v", off, len(data)); !bytes.Equal(got, data) {
		t.Fatal("vdi cache flush did not push the unaligned write")
	}
	if got := collieReadAt(t, s, "v", off2, len(second)); !bytes.Equal(got, make([]byte, len(second))) {
		t.Fatal("a write never flushed reached the replicas (not cached?)")
	}
}

// TestObjectCacheSheepfs: sheepfs --objectcache on the caching node: a
// write without fsync stays in the cache (another node reads the old
// bytes), fsync flushes the VDI (FLUSH_VDI) and then another node reads
// both writes.
func TestObjectCacheSheepfs(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	sheeps := startCacheCluster(t, 3, 3, "-w", "size=64M")
	s0, s1 := sheeps[0], sheeps[1]
	s0.must(t, nil, "vdi", "create", "Alice", "32M")
	m := mountSheepfs(t, s0, "--objectcache")
	if r := shell(t, m.Dir, "echo Alice > vdi/mount"); r.Code != 0 {
		t.Fatalf("echo Alice > vdi/mount: %s", r.Stderr)
	}
	vol := m.path("volume", "Alice")
	dir := t.TempDir()
	d1, d2 := sheepfsRandom(t, 4<<20), sheepfsRandom(t, 1<<20)
	os.WriteFile(filepath.Join(dir, "d1"), d1, 0o644)
	os.WriteFile(filepath.Join(dir, "d2"), d2, 0o644)
	tool(t, "dd", "if="+filepath.Join(dir, "d1"), "of="+vol, "bs=1M", "conv=notrunc", "status=none")
	if got := s1.must(t, nil, "vdi", "read", "Alice", "0", "4M"); got != string(make([]byte, 4<<20)) {
		t.Fatal("a sheepfs write reached the replicas before fsync")
	}
	tool(t, "dd", "if="+filepath.Join(dir, "d2"), "of="+vol, "bs=1M", "seek=8", "conv=notrunc,fsync", "status=none")
	if got := s1.must(t, nil, "vdi", "read", "Alice", "0", "4M"); got != string(d1) {
		t.Fatal("fsync on the volume did not flush the earlier write")
	}
	if got := s1.must(t, nil, "vdi", "read", "Alice", "8M", "1M"); got != string(d2) {
		t.Fatal("fsync on the volume did not flush its own write")
	}
}

// TestObjectCacheQemuFlows replays QEMU's flows of qemu_flows_test.go and
// qemu_snapshot_test.go against a sheep with the object cache on: they
// must behave as without it. Left out: Flush (it expects INVALID_PARMS),
// SnapshotGoto and Discard (they look for object files in the store
// before any flush, where the cache keeps them).
func TestObjectCacheQemuFlows(t *testing.T) {
	parallel(t)
	// qemuSheep starts its sheep with qemuCacheOptions for these
	// subtests (by their names).
	for _, f := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"PipelinedIO", TestQemuPipelinedIO},
		{"Resize", TestQemuResize},
		{"SnapshotCreate", TestQemuSnapshotCreate},
		{"SnapshotList", TestQemuSnapshotList},
		{"SnapshotDelete", TestQemuSnapshotDelete},
		{"COWAfterSnapshot", TestQemuCOWAfterSnapshot},
		{"Readonly", TestQemuReadonly},
		{"Clone", TestQemuClone},
		{"VMState", TestQemuVMState},
	} {
		t.Run(f.name, f.run)
	}
}
