package store

import (
	"os"
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
	mustCreate(t, s, 1, 4<<20, 0, nil) // sparse: fits
	big := make([]byte, 2<<20)
	wantResult(t, s.WriteAt(ctx, 1, big, 0, true), proto.ResNoSpace)
	wantResult(t, s.Create(ctx, 2, 4<<20, 0, big, true), proto.ResNoSpace)
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
