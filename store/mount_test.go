package store

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// mountScratch mounts a filesystem of type fstype on a fresh directory and
// unmounts it when the test ends. It skips the test where mounting is not
// allowed (not root, no CAP_SYS_ADMIN, no such filesystem).
func mountScratch(t *testing.T, fstype, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("mounting %s needs root", fstype)
	}
	dir := filepath.Join(t.TempDir(), fstype)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("store-test", dir, fstype, 0, opts); err != nil {
		t.Skipf("cannot mount %s here: %v", fstype, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// ramfs has no extended attributes (tmpfs gained user.* in Linux 6.6, and
// ext4, xfs and btrfs have them), so it is the failing case at hand.
func TestOpenRejectsDirWithoutXattrs(t *testing.T) {
	dir := mountScratch(t, "ramfs", "")
	s, err := Open(Config{Dir: dir})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded on ramfs, which has no user xattrs")
	}
	want := "store dir " + dir + " does not support extended attributes (user.*): "
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start with %q", err, want)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".xattr-probe") {
			t.Fatalf("probe file %s left behind", e.Name())
		}
	}
}

// A full disk is NO_SPACE, for both a write and a Create, and a failed
// Create leaves no tmp file.
func TestFullDiskIsNoSpace(t *testing.T) {
	dir := mountScratch(t, "tmpfs", "size=1m")
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Skipf("tmpfs here cannot hold a store: %v", err)
	}
	defer s.Close()
	const inode = 1<<63 | 1
	mustCreate(t, s, inode, 4<<20, 0, nil) // an inode is sparse: fits
	big := make([]byte, 2<<20)
	wantResult(t, s.WriteAt(ctx, inode, big, 0, true), proto.ResNoSpace)
	wantResult(t, s.Create(ctx, 2, 4<<20, 0, big, true), proto.ResNoSpace)
	wantResult(t, s.Create(ctx, 3, 4<<20, 0, nil, true), proto.ResNoSpace) // a data object is allocated whole
	if s.Exists(2) {
		t.Fatal("a failed Create left an object")
	}
	names, _ := readDirNames(s.objDir)
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			t.Fatalf("a failed Create left %s", n)
		}
	}
}

// mountSmallExt4 makes an ext4 image with 1 KiB blocks and no journal, as
// Sheepdog's functional tests make their stores (mkfs on a small image),
// loop-mounts it on a fresh directory and unmounts it when the test ends.
// It skips the test where that is not possible (not root, no mkfs.ext4,
// no loop device).
func mountSmallExt4(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop-mounting an ext4 image needs root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	tmp := t.TempDir()
	img, dir := filepath.Join(tmp, "small.img"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^has_journal", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,user_xattr", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount an ext4 image here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// On ext4 with 1 KiB blocks a file's xattrs hold ~950 bytes, not the
// 2056 of 256 chunk checksums: the store opens with 64 chunks per object,
// and checksums still catch a flipped byte, survive a reopen and let
// Repair put good bytes back.
func TestSmallBlockExt4KeepsChecksums(t *testing.T) {
	dir := mountSmallExt4(t)
	s := openStore(t, Config{Dir: dir})
	if s.maxChunks != 64 {
		t.Fatalf("maxChunks %d on 1 KiB-block ext4, want 64", s.maxChunks)
	}
	const oid, size = 0x1234, 4 << 20
	good := randBytes(size)
	mustCreate(t, s, oid, size, 0, nil)
	if err := s.WriteAt(ctx, oid, good[100:200<<10], 100, true); err != nil {
		t.Fatal(err)
	}
	copy(good[:100], make([]byte, 100))
	clear(good[200<<10:])
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("content differs")
	}
	v := make([]byte, maxSumLen)
	n, err := unix.Getxattr(s.objPath(oid), sumAttr, v)
	if err != nil || n != sumHeaderSize+8*64 || v[1] != 16 {
		t.Fatalf("xattr: %d bytes of chunk shift %d, %v; want %d bytes of shift 16", n, v[1], err, sumHeaderSize+8*64)
	}

	// A flipped byte in chunk 2 (bytes 128 KiB to 192 KiB).
	s.Close()
	flipByte(t, s.objPath(oid), 150<<10)
	s = openStore(t, Config{Dir: dir})
	buf := make([]byte, 4096)
	wantChecksum(t, s.ReadAt(ctx, oid, buf, 140<<10))
	if got := mustRead(t, s, oid, 64<<10, 4096); !bytes.Equal(got, good[64<<10:68<<10]) {
		t.Fatal("chunk 1 differs")
	}
	wantChecksum(t, s.Verify(oid))
	if n, err := s.Repair(ctx, oid, good); err != nil || n != 1 {
		t.Fatalf("Repair: %d chunks, %v; want 1", n, err)
	}
	if err := s.Verify(oid); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s, oid, 0, size); !bytes.Equal(got, good) {
		t.Fatal("content differs after repair")
	}
}
