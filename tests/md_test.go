package tests

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// mdDisks makes n disk dirs under a fresh temp dir, each weighed as
// 1 GiB on the node's disk ring (Sheepdog's md size xattr, which a disk
// keeps from its first start): equal weights, whatever filesystem a dir
// is on.
func mdDisks(t *testing.T, n int) []string {
	t.Helper()
	root := t.TempDir()
	var out []string
	for i := range n {
		d := filepath.Join(root, fmt.Sprintf("disk%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		setDiskSpace(t, d, 1<<30)
		out = append(out, d)
	}
	return out
}

func setDiskSpace(t *testing.T, dir string, space uint64) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], space)
	if err := unix.Setxattr(dir, "user.md.size", b[:], 0); err != nil {
		t.Fatalf("set user.md.size on %s: %v", dir, err)
	}
}

// mdSeed creates VDI name through s and writes random bytes to its first
// k data objects, k the least (at least 4) for which the objects written
// and the inode reach every disk in want, as the node's disk ring places
// them (equal weights, see mdDisks); it returns the bytes and the object
// count.
func mdSeed(t *testing.T, s *Sheep, name string, disks, want []string) ([]byte, int) {
	t.Helper()
	s.must(t, nil, "vdi", "create", name, "256M")
	vid := listedVid(t, s, name)
	rd := make([]md.RingDisk, len(disks))
	for i, d := range disks {
		rd[i] = md.RingDisk{Path: d, Space: 1 << 30}
	}
	ring := md.NewRing(rd)
	k := 4
	for ; k < 64; k++ {
		hit := map[string]bool{disks[ring.Locate(proto.VidToVdiOid(vid))]: true}
		for i := range k {
			hit[disks[ring.Locate(proto.VidToDataOid(vid, uint32(i)))]] = true
		}
		n := 0
		for _, w := range want {
			if hit[w] {
				n++
			}
		}
		if n == len(want) {
			break
		}
	}
	data := make([]byte, k<<22)
	crand.Read(data)
	s.must(t, data, "vdi", "write", name, "0", strconv.Itoa(len(data)))
	return data, k + 1
}

// checkOnRing fails t unless every object file on the disks is on the
// disk the ring places it on.
func checkOnRing(t *testing.T, disks []string) {
	t.Helper()
	rd := make([]md.RingDisk, len(disks))
	for i, d := range disks {
		rd[i] = md.RingDisk{Path: d, Space: 1 << 30}
	}
	ring := md.NewRing(rd)
	for i, d := range disks {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if oid, ok := proto.ParseObjectName(e.Name()); ok && ring.Locate(oid) != i {
				t.Errorf("object %s on %s, the ring puts it on %s", e.Name(), d, disks[ring.Locate(oid)])
			}
		}
	}
}

// objectsIn counts the object files directly in dir.
func objectsIn(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, ok := proto.ParseObjectName(e.Name()); ok && e.Type().IsRegular() {
			n++
		}
	}
	return n
}

// mdInfoRow is a row of dog's "node md info" table.
var mdInfoRow = regexp.MustCompile(`(?m)^ ?\d+\t[0-9.]+ [MGTP]B\t[0-9.]+ [MGTP]B\t[0-9.]+ [MGTP]B\t +\d+%\t(/.*)$`)

// mdPaths runs "node md info" on s and returns the disk paths it lists.
func mdPaths(t *testing.T, s *Sheep) []string {
	t.Helper()
	out := s.must(t, nil, "node", "md", "info")
	if !strings.HasPrefix(out, "Id\tSize\tUsed\tAvail\tUse%\tPath\n") {
		t.Fatalf("node md info: no header:\n%s", out)
	}
	var paths []string
	for _, m := range mdInfoRow.FindAllStringSubmatch(out, -1) {
		paths = append(paths, m[1])
	}
	if len(paths) != strings.Count(out, "\n")-1 {
		t.Fatalf("node md info: rows not in dog's format:\n%s", out)
	}
	return paths
}

// A sheep started as DIR,D0,D1,D2 spreads the objects over the three
// disks (none in DIR); "node md unplug" of one moves its objects to the
// others, and "node md plug" brings back the ones the ring puts there,
// with every byte read back the same.
func TestMultiDiskSpreadUnplugPlug(t *testing.T) {
	parallel(t)
	disks := mdDisks(t, 3)
	s := &Sheep{t: t, Dir: t.TempDir(), Port: freePort(t), Disks: disks}
	s.start("-z", "0")
	s.must(t, nil, "cluster", "format", "--copies=1")
	data, objs := mdSeed(t, s, "md", disks, disks)

	total := 0
	for _, d := range disks {
		n := objectsIn(t, d)
		if n == 0 {
			t.Errorf("no object on %s", d)
		}
		total += n
	}
	if total != objs {
		t.Errorf("%d objects on the disks, want %d", total, objs)
	}
	checkOnRing(t, disks)
	if n := objectsIn(t, filepath.Join(s.Dir, "obj")); n != 0 {
		t.Errorf("%d objects in the metadata dir", n)
	}
	if got := mdPaths(t, s); strings.Join(got, ",") != strings.Join(disks, ",") {
		t.Errorf("node md info lists %v, want %v", got, disks)
	}
	raw := s.must(t, nil, "node", "md", "info", "-A", "-r")
	if lines := strings.Split(strings.TrimSpace(raw), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], s.Addr()+" 1 ") || !strings.HasSuffix(lines[1], "% "+disks[1]) {
		t.Errorf("node md info -A -r:\n%s", raw)
	}

	on1 := objectsIn(t, disks[1])
	s.must(t, nil, "node", "md", "unplug", "-f", disks[1])
	waitFor(t, 20, "unplug", func() (bool, string) {
		n := objectsIn(t, disks[1])
		return n == 0, fmt.Sprintf("%d objects on the unplugged disk", n)
	})
	if got := mdPaths(t, s); len(got) != 2 {
		t.Errorf("node md info after unplug lists %v", got)
	}
	if n := objectsIn(t, disks[0]) + objectsIn(t, disks[2]); n != total {
		t.Errorf("%d objects on the remaining disks, want %d", n, total)
	}
	checkOnRing(t, []string{disks[0], disks[2]})
	mustRead(t, s, "md", data, "after unplug")

	// No change is a failure, as in dog.
	if r := s.collie(t, nil, "node", "md", "unplug", "-f", disks[1]); r.Code != 1 || !strings.Contains(r.Stderr, "Failed to execute request") {
		t.Errorf("unplug of an unplugged disk: exit %d, %q", r.Code, r.Stderr)
	}

	s.must(t, nil, "node", "md", "plug", "-f", disks[1])
	// A move copies an object to its new disk before it removes the old
	// one: wait for both ends of the moves.
	waitFor(t, 20, "plug", func() (bool, string) {
		n := objectsIn(t, disks[1])
		all := objectsIn(t, disks[0]) + n + objectsIn(t, disks[2])
		return n == on1 && all == total, fmt.Sprintf("%d objects on the plugged disk, want %d; %d in all, want %d", n, on1, all, total)
	})
	checkOnRing(t, disks)
	mustRead(t, s, "md", data, "after plug")
}

// ext4Shutdown makes every I/O on the ext4 filesystem mounted at dir fail
// with EIO from now on, reads of cached pages included (EXT4_IOC_SHUTDOWN,
// what xfs_io's "shutdown" does): a disk that died, at once and for
// every file. A read-only block device would fail only the writeback of
// dirty pages, later; a read-only remount is refused while the sheep
// holds files open for writing; a lazy unmount makes files vanish (ENOENT)
// rather than fail.
func ext4Shutdown(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const ext4IOCShutdown = 0x8004587d // _IOR('X', 125, __u32)
	const noLogFlush = 2               // EXT4_GOING_FLAGS_NOLOGFLUSH
	if err := unix.IoctlSetPointerInt(int(f.Fd()), ext4IOCShutdown, noLogFlush); err != nil {
		t.Fatalf("shut down the filesystem at %s: %v", dir, err)
	}
}

// A disk that fails I/O under a serving node: the node unplugs it by
// itself (logged), keeps serving reads and writes of its objects from the
// other copy, recovery puts them back on its other disks, and "node md
// plug" adds the disk back (after it is mounted again).
func TestMultiDiskFailedDisk(t *testing.T) {
	parallel(t)
	disks := mdDisks(t, 2)
	bad := ext4Image(t, 160<<20)
	setDiskSpace(t, bad, 1<<30)
	if err := syncFS(bad); err != nil {
		t.Fatal(err)
	}
	disks = append(disks, bad)
	a := &Sheep{t: t, Dir: t.TempDir(), Port: freePort(t), Disks: disks}
	metricsAddr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	a.start("-z", "0", "--metrics", metricsAddr)
	if m, _ := scrape(t, metricsAddr); m["sheepdog_disks"] != 3 || m["sheepdog_disk_failures_total"] != 0 {
		t.Errorf("metrics before: %v disks, %v failures", m["sheepdog_disks"], m["sheepdog_disk_failures_total"])
	}
	b := startSheep(t, "-z", "1", "--join", a.Addr())
	a.must(t, nil, "cluster", "format", "--copies=2")
	waitRunning(t, b)
	data, objs := mdSeed(t, a, "md", disks, []string{bad})
	onBad := objectsIn(t, bad)
	if onBad == 0 {
		t.Fatalf("no object landed on the disk to fail (%d and %d on the others)", objectsIn(t, disks[0]), objectsIn(t, disks[1]))
	}
	checkOnRing(t, disks)

	ext4Shutdown(t, bad)
	start := time.Now()
	mustRead(t, a, "md", data, "right after the disk failed")
	// Writes through the node go on too, to objects of the failed disk
	// among them.
	patch := []byte(strings.Repeat("after the failure ", 1000))
	for off := 0; off < len(data); off += 4 << 20 {
		a.must(t, patch, "vdi", "write", "md", strconv.Itoa(off), strconv.Itoa(len(patch)))
		copy(data[off:], patch)
	}
	mustRead(t, a, "md", data, "after writes to the failed disk's objects")
	t.Logf("read and rewrite of the VDI with a failed disk: %v", time.Since(start).Round(time.Millisecond))
	if got := mdPaths(t, a); len(got) != 2 || got[0] != disks[0] || got[1] != disks[1] {
		t.Errorf("node md info after the failure lists %v", got)
	}
	if m, _ := scrape(t, metricsAddr); m["sheepdog_disks"] != 2 || m["sheepdog_disk_failures_total"] != 1 {
		t.Errorf("metrics after the failure: %v disks, %v failures", m["sheepdog_disks"], m["sheepdog_disk_failures_total"])
	}
	log, _ := os.ReadFile(filepath.Join(a.Dir, "sheep.log"))
	if !strings.Contains(string(log), "md: disk failed I/O: unplugged") {
		t.Errorf("no log line for the failed disk")
	}
	// Every object is back on a's remaining disks (recovery from b).
	waitFor(t, 20, "recovery of the failed disk's objects", func() (bool, string) {
		n := objectsIn(t, disks[0]) + objectsIn(t, disks[1])
		return n == objs, fmt.Sprintf("%d objects on the good disks, want %d", n, objs)
	})
	b.Kill() // from now on, a serves from its own disks only
	mustRead(t, a, "md", data, "from the node's own disks")

	// The disk comes back: mounted again, plugged, and it gets objects.
	img := filepath.Join(filepath.Dir(bad), "store.img")
	waitFor(t, 10, "unmount the failed disk", func() (bool, string) {
		out, err := exec.Command("umount", bad).CombinedOutput()
		return err == nil, fmt.Sprintf("umount: %v: %s", err, out)
	})
	if out, err := exec.Command("mount", "-o", "loop,user_xattr", img, bad).CombinedOutput(); err != nil {
		t.Fatalf("mount again: %v: %s", err, out)
	}
	setDiskSpace(t, bad, 1<<30)
	a.must(t, nil, "node", "md", "plug", "-f", bad)
	waitFor(t, 20, "objects moved to the plugged disk", func() (bool, string) {
		n := objectsIn(t, bad)
		return n == onBad, fmt.Sprintf("%d objects on it, want %d", n, onBad)
	})
	if got := mdPaths(t, a); len(got) != 3 {
		t.Errorf("node md info after plug lists %v", got)
	}
	mustRead(t, a, "md", data, "after the disk was plugged back")
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
