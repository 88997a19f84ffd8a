package tests

import (
	"bytes"
	"crypto/rand"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// smallExt4 makes a 64 MiB ext4 image with 1 KiB blocks and no journal
// (what Sheepdog's functional suite makes for its stores: mkfs on a small
// image picks 1 KiB blocks), loop-mounts it and unmounts it at cleanup,
// after the sheeps started later are stopped. It skips the test where
// that cannot be done (not root, no mkfs.ext4, no loop device).
func smallExt4(t *testing.T) string {
	t.Helper()
	return ext4Image(t, 64<<20, "-b", "1024")
}

// ext4Image makes an ext4 image of size bytes (sparse) with the suite's
// mkfs options (no journal) plus extra, loop-mounts it and unmounts it at
// cleanup.
func ext4Image(t *testing.T, size int64, extra ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "loop-mounting an ext4 image needs root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		skipUnlessRequired(t, "mkfs.ext4 not installed (e2fsprogs)")
	}
	tmp := t.TempDir()
	img, dir := filepath.Join(tmp, "store.img"), filepath.Join(tmp, "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-F", "-O", "^has_journal"}, extra...)
	if out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,user_xattr", img, dir).CombinedOutput(); err != nil {
		skipUnlessRequired(t, "cannot loop-mount an ext4 image here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Stores on ext4 with 1 KiB blocks, whose xattrs hold under 1 KiB per
// file: two sheeps serve a VDI with checksums of 64 KiB chunks (a 520-byte
// xattr per data object), a byte flipped in one copy is caught and
// repaired from the other, and a restarted sheep reads its store back.
func TestStoreOnSmallBlockExt4(t *testing.T) {
	parallel(t)
	var sheeps []*Sheep
	for i := range 2 {
		s := &Sheep{t: t, Dir: smallExt4(t), Port: freePort(t)}
		extra := []string{"-z", strconv.Itoa(i)}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		s.start(extra...)
		sheeps = append(sheeps, s)
	}
	for _, s := range sheeps {
		waitNodes(t, s, 2)
		log, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
		if !bytes.Contains(log, []byte("keeps small extended attributes")) {
			t.Fatalf("%s did not log its smaller checksum layout:\n%s", s.Addr(), log)
		}
	}
	sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
	sheeps[0].must(t, nil, "vdi", "create", "Alice", "16M")
	data := make([]byte, 8<<20)
	rand.Read(data)
	size := strconv.Itoa(len(data))
	sheeps[1].must(t, data, "vdi", "write", "Alice", "0", size)
	for _, s := range sheeps {
		mustRead(t, s, "Alice", data, "after the write")
		v := make([]byte, 4096)
		n, err := unix.Getxattr(dataObject(t, s, 0), "user.sheepdog.crc", v)
		if err != nil || n != 8+8*64 {
			t.Fatalf("checksum xattr on %s: %d bytes, %v; want %d", s.Addr(), n, err, 8+8*64)
		}
	}

	// A flipped byte in one copy: the read through that sheep gets the
	// other copy and repairs its own.
	const off = 200<<10 + 3
	path := dataObject(t, sheeps[1], 0)
	flip(t, path, off)
	mustRead(t, sheeps[1], "Alice", data, "after a byte of one copy was flipped")
	if b := fileByte(t, path, off); b != data[off] {
		t.Fatalf("copy on %s not repaired: byte %#x, want %#x", sheeps[1].Addr(), b, data[off])
	}
	// vdi check finds a flipped byte in the other copy.
	flip(t, dataObject(t, sheeps[0], 0), off+70<<10)
	out := sheeps[1].must(t, nil, "vdi", "check", "Alice")
	if !strings.Contains(out, "fixed replica ") {
		t.Fatalf("vdi check printed:\n%s", out)
	}

	// A restart reads the store back.
	sheeps[1].Stop()
	sheeps[1].start("-z", "1", "--join", sheeps[0].Addr())
	waitRunning(t, sheeps[1])
	mustRead(t, sheeps[1], "Alice", data, "after a restart")
}

// sheepdogVnodes is Sheepdog's recalculate_vnodes for spaces (integer
// average, single-precision factor, rintf).
func sheepdogVnodes(spaces []uint64) []int {
	var total uint64
	for _, s := range spaces {
		total += s
	}
	avg := total / uint64(len(spaces))
	out := make([]int, len(spaces))
	for i, s := range spaces {
		out[i] = int(math.RoundToEven(float64(float32(128) * (float32(s) / float32(avg)))))
	}
	return out
}

// Automatic vnodes, as Sheepdog's test 054: sheeps on stores of 1, 2 and 3
// GiB get vnodes by the space available on them when first started, with
// Sheepdog's arithmetic, at format and again for every node when a fourth
// joins.
func TestAutoVnodesBySpace(t *testing.T) {
	var sheeps []*Sheep
	var spaces []uint64
	for i, gib := range []int64{1, 2, 3, 1} {
		dir := ext4Image(t, gib<<30)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		spaces = append(spaces, st.Bavail*uint64(st.Frsize))
		s := &Sheep{t: t, Dir: dir, Port: freePort(t)}
		extra := []string{"-z", strconv.Itoa(i)}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		if i == 3 {
			sheeps[0].must(t, nil, "cluster", "format", "--copies=2")
		}
		s.start(extra...)
		sheeps = append(sheeps, s)
		if i == 2 {
			waitNodes(t, sheeps[0], 3)
		}
	}
	waitNodes(t, sheeps[0], 4)
	vnodesAt := func(epoch string) map[int]int {
		got := map[int]int{}
		for _, line := range strings.Split(sheeps[3].must(t, nil, "cluster", "info", "-v"), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || f[len(f)-1] == "" || !strings.Contains(line, "[") {
				continue
			}
			i := strings.Index(line, "[")
			head := strings.Fields(line[:i])
			if len(head) == 0 || head[len(head)-1] != epoch {
				continue
			}
			for _, n := range strings.Split(strings.Trim(line[i:], "[]"), ", ") {
				p := strings.Split(n, ":")
				port, _ := strconv.Atoi(p[1])
				v, _ := strconv.Atoi(p[2])
				got[port] = v
			}
		}
		return got
	}
	for epoch, n := range map[string]int{"1": 3, "2": 4} {
		want := sheepdogVnodes(spaces[:n])
		got := vnodesAt(epoch)
		if len(got) != n {
			t.Fatalf("epoch %s lists %v, want %d nodes", epoch, got, n)
		}
		for i, s := range sheeps[:n] {
			if got[s.Port] != want[i] {
				t.Fatalf("epoch %s: vnodes %v by port; want %v for spaces %v", epoch, got, want, spaces[:n])
			}
		}
	}
}
