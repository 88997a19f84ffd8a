package tests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sheepfsNeedFuse skips the test when the kernel offers no FUSE device.
func sheepfsNeedFuse(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipUnlessRequired(t, "no /dev/fuse (%v): FUSE is not available in this kernel or container", err)
	}
}

// sheepfsMount is a sheepfs process running in the foreground.
type sheepfsMount struct {
	Dir    string
	cmd    *exec.Cmd
	out    *bytes.Buffer // read only after exited is closed
	exited chan struct{}
}

// path is a path inside the mount.
func (m *sheepfsMount) path(p ...string) string {
	return filepath.Join(append([]string{m.Dir}, p...)...)
}

// mountSheepfs runs `sheepfs -f` against s on a fresh directory and waits
// until the file system is mounted. Cleanup unmounts it (fusermount3 -u,
// then umount -l) and stops the process, also when the test failed.
func mountSheepfs(t testing.TB, s *Sheep, extra ...string) *sheepfsMount {
	t.Helper()
	sheepfsNeedFuse(t)
	m := &sheepfsMount{Dir: t.TempDir(), out: &bytes.Buffer{}, exited: make(chan struct{})}
	args := append(append([]string{"-f", "-p", strconv.Itoa(s.Port)}, extra...), m.Dir)
	m.cmd = exec.Command(bin("sheepfs"), args...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		sheepfsUnmount(t, m.Dir)
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("sheepfs did not exit after the unmount")
			m.cmd.Process.Kill()
			<-m.exited
		}
		if t.Failed() {
			t.Logf("sheepfs output:\n%s", m.out)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !sheepfsMounted(m.Dir) {
		select {
		case <-m.exited:
			t.Fatalf("sheepfs exited before mounting:\n%s", m.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sheepfs did not mount %s", m.Dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// sheepfsMounted reports whether a sheepfs is mounted at dir.
func sheepfsMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == dir && strings.Contains(sc.Text(), " - fuse.sheepfs ") {
			return true
		}
	}
	return false
}

// sheepfsUnmount unmounts dir if it is mounted: fusermount3 -u, and
// umount -l when that fails (a busy mount).
func sheepfsUnmount(t testing.TB, dir string) {
	t.Helper()
	if !sheepfsMounted(dir) {
		return
	}
	out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput()
	if err == nil {
		return
	}
	t.Logf("fusermount3 -u %s: %v %s; trying umount -l", dir, err, out)
	if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
		t.Errorf("umount -l %s: %v %s", dir, err, out)
	}
}

// sheepfsCluster starts a formatted one-node copies=1 sheep (with extra
// flags; nil: no NBD) and creates the VDIs given as name, size pairs.
func sheepfsCluster(t testing.TB, extra []string, vdis ...string) *Sheep {
	t.Helper()
	if extra == nil {
		extra = []string{"--nbd", "none"}
	}
	s := startSheep(t, extra...)
	s.must(t, nil, "cluster", "format", "--copies=1")
	for i := 0; i+1 < len(vdis); i += 2 {
		// Right after a format a create may be answered "waiting for
		// format" although it went through: retry, and take "exists"
		// on a retry as done (as startNBDCluster does).
		deadline := time.Now().Add(30 * time.Second)
		for retry := false; ; retry = true {
			r := s.collie(t, nil, "vdi", "create", vdis[i], vdis[i+1])
			if r.Code == 0 || (retry && strings.Contains(r.Stderr, "VDI exists already")) {
				break
			}
			if time.Now().After(deadline) || !strings.Contains(r.Stderr, "Waiting for cluster to be formatted") {
				t.Fatalf("collie vdi create %s: exit %d\n%s%s", vdis[i], r.Code, r.Stdout, r.Stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return s
}

func sheepfsRandom(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readRange reads n bytes at off of a file in the mount.
func readRange(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s [%d,+%d): %v", path, off, n, err)
	}
	return b
}

// shell runs a shell command line in dir and returns its result.
func shell(t testing.TB, dir, line string) Result {
	t.Helper()
	return run(t, nil, "sh", "-c", "cd "+dir+" && "+line)
}

func TestSheepfsReports(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	s := sheepfsCluster(t, nil, "Alice", "64M", "Bob", "1G")
	m := mountSheepfs(t, s)

	info, err := os.ReadFile(m.path("cluster", "info"))
	if err != nil || !strings.HasPrefix(string(info), "Cluster status: running") {
		t.Fatalf("cluster/info: %v\n%s", err, info)
	}
	// Every report is the text collie prints, rendered fresh.
	for _, r := range [][]string{{"cluster", "info"}, {"vdi", "list"}, {"node", "list"}, {"node", "info"}} {
		got, err := os.ReadFile(m.path(r...))
		if err != nil {
			t.Fatalf("read %s: %v", strings.Join(r, "/"), err)
		}
		if want := s.must(t, nil, r...); string(got) != want {
			t.Errorf("%s differs from collie %s:\n got: %q\nwant: %q", strings.Join(r, "/"), strings.Join(r, " "), got, want)
		}
	}
	list, _ := os.ReadFile(m.path("vdi", "list"))
	for _, name := range []string{"Alice", "Bob"} {
		if !bytes.Contains(list, []byte(" "+name+" ")) {
			t.Errorf("vdi/list does not list %s:\n%s", name, list)
		}
	}
	s.must(t, nil, "vdi", "create", "Carol", "10M")
	if list, _ := os.ReadFile(m.path("vdi", "list")); !bytes.Contains(list, []byte(" Carol ")) {
		t.Errorf("vdi/list is not fresh: no Carol after creating it:\n%s", list)
	}
	if st, err := os.Stat(m.path("vdi", "list")); err != nil || st.Size() == 0 {
		t.Errorf("stat vdi/list: %v (size must be the text's)", err)
	}

	// config files
	if b, _ := os.ReadFile(m.path("config", "sheep_info")); string(b) != s.Addr()+"\n" {
		t.Errorf("config/sheep_info = %q, want %q", b, s.Addr()+"\n")
	}
	if b, _ := os.ReadFile(m.path("config", "page_cache")); string(b) != "0\n" {
		t.Errorf("config/page_cache = %q, want 0", b)
	}
	if err := os.WriteFile(m.path("config", "page_cache"), []byte("2\n"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("page_cache=2: %v, want EINVAL", err)
	}
	if err := os.WriteFile(m.path("config", "sheep_info"), []byte("nonsense\n"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("sheep_info=nonsense: %v, want EINVAL", err)
	}
	if err := os.WriteFile(m.path("config", "sheep_info"), []byte("127.0.0.1:1\n"), 0); err == nil {
		t.Errorf("switching to a sheep that is not there succeeded")
	}
	if err := os.WriteFile(m.path("config", "sheep_info"), []byte(s.Addr()+"\n"), 0); err != nil {
		t.Errorf("sheep_info=%s: %v", s.Addr(), err)
	}
	// The layout cannot be taken apart.
	if err := os.Remove(m.path("cluster", "info")); err == nil {
		t.Errorf("rm cluster/info succeeded")
	}
	if _, err := os.Stat(m.path("cluster", "info")); err != nil {
		t.Errorf("cluster/info after rm: %v", err)
	}
}

func TestSheepfsVolume(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	s := sheepfsCluster(t, nil, "Alice", "64M")
	m := mountSheepfs(t, s)
	vol := m.path("volume", "Alice")

	if r := shell(t, m.Dir, "echo Alice > vdi/mount"); r.Code != 0 {
		t.Fatalf("echo Alice > vdi/mount: %s", r.Stderr)
	}
	st, err := os.Stat(vol)
	if err != nil || st.Size() != 64<<20 {
		t.Fatalf("stat volume/Alice: %v size %d, want %d", err, st.Size(), 64<<20)
	}
	if r := shell(t, m.Dir, "ls -l volume/"); !strings.Contains(r.Stdout, strconv.Itoa(64<<20)+" ") || !strings.Contains(r.Stdout, " Alice") {
		t.Errorf("ls -l volume/ does not show Alice with its size:\n%s", r.Stdout)
	}
	// Mounting again is a no-op.
	if err := os.WriteFile(m.path("vdi", "mount"), []byte("Alice\n"), 0); err != nil {
		t.Errorf("second mount of Alice: %v", err)
	}

	// 5 MiB at 3 MiB (across an object boundary) through the file,
	// fsynced, read back by collie.
	data := sheepfsRandom(t, 5<<20)
	src := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "dd", "if="+src, "of="+vol, "bs=1M", "seek=3", "conv=notrunc,fsync", "status=none")
	if got := s.must(t, nil, "vdi", "read", "Alice", "3M", "5M"); got != string(data) {
		t.Fatalf("collie vdi read after dd through sheepfs: %d bytes differ", len(got))
	}
	// What collie writes reads back through the file.
	data2 := sheepfsRandom(t, 1<<20)
	s.must(t, data2, "vdi", "write", "Alice", "40M", "1M")
	if got := readRange(t, vol, 40<<20, 1<<20); !bytes.Equal(got, data2) {
		t.Fatalf("bytes written by collie read back differently through volume/Alice")
	}
	// Holes read as zeros.
	if got := readRange(t, vol, 20<<20, 64<<10); !bytes.Equal(got, make([]byte, 64<<10)) {
		t.Errorf("a hole does not read as zeros")
	}
	// dd without conv=notrunc (O_TRUNC) writes onto the volume as onto a
	// block device: the size stays.
	tool(t, "dd", "if="+src, "of="+vol, "bs=1M", "count=1", "status=none")
	if st, _ := os.Stat(vol); st.Size() != 64<<20 {
		t.Errorf("size after dd without notrunc: %d", st.Size())
	}
	if err := os.Truncate(vol, 128<<20); !errors.Is(err, syscall.EFBIG) {
		t.Errorf("growing by truncate: %v, want EFBIG", err)
	}

	// Concurrent readers all get the right bytes.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(vol)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for k := 0; k < 4; k++ {
				b := make([]byte, 1<<20)
				if _, err := f.ReadAt(b, 40<<20); err != nil || !bytes.Equal(b, data2) {
					t.Errorf("concurrent reader %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// SEEK_DATA/SEEK_HOLE see the objects, so cp --sparse keeps holes.
	f, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil || hole != 8<<20 {
		t.Errorf("SEEK_HOLE from 0 = %d, %v; want %d", hole, err, 8<<20)
	}
	next, err := unix.Seek(int(f.Fd()), 8<<20, unix.SEEK_DATA)
	if err != nil || next != 40<<20 {
		t.Errorf("SEEK_DATA from 8 MiB = %d, %v; want %d", next, err, 40<<20)
	}
	if _, err := unix.Seek(int(f.Fd()), 44<<20, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA after the last data: %v, want ENXIO", err)
	}
	f.Close()
	dst := filepath.Join(t.TempDir(), "copy.img")
	tool(t, "cp", "--sparse=always", vol, dst)
	tool(t, "cmp", vol, dst)
	var dstat unix.Stat_t
	if err := unix.Stat(dst, &dstat); err != nil || dstat.Blocks*512 > 16<<20 {
		t.Errorf("cp --sparse=always made %d bytes of a volume with 12 MiB of data (%v)", dstat.Blocks*512, err)
	}

	// fallocate --punch-hole discards.
	tool(t, "fallocate", "--punch-hole", "--offset", "40M", "--length", "4M", vol)
	if got := readRange(t, vol, 40<<20, 1<<20); !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Errorf("punched range does not read as zeros")
	}
	if got := s.must(t, nil, "vdi", "read", "Alice", "40M", "1M"); got != string(make([]byte, 1<<20)) {
		t.Errorf("collie sees data in the punched range")
	}

	// vdi/unmount removes the file; rm volume/X does too.
	if err := os.WriteFile(m.path("vdi", "unmount"), []byte("Alice\n"), 0); err != nil {
		t.Fatalf("unmount Alice: %v", err)
	}
	if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume/Alice after unmount: %v", err)
	}
	if err := os.WriteFile(m.path("vdi", "unmount"), []byte("Alice\n"), 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("unmounting what is not mounted: %v, want ENOENT", err)
	}
	if err := os.WriteFile(m.path("vdi", "mount"), []byte("Nobody\n"), 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("mounting a VDI that does not exist: %v, want ENOENT", err)
	}
	if err := os.WriteFile(m.path("vdi", "mount"), []byte("Alice\n"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(vol); err != nil {
		t.Errorf("rm volume/Alice: %v", err)
	}
	if entries, _ := os.ReadDir(m.path("volume")); len(entries) != 0 {
		t.Errorf("volume/ after rm: %v", entries)
	}
}

func TestSheepfsSnapshots(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	s := sheepfsCluster(t, nil, "Alice", "16M")
	m := mountSheepfs(t, s)
	before := sheepfsRandom(t, 1<<20)
	s.must(t, before, "vdi", "write", "Alice", "1M", "1M")
	s.must(t, nil, "vdi", "snapshot", "-s", "snap1", "Alice")

	for _, line := range []string{"Alice", "Alice:1", "Alice:snap1"} {
		if err := os.WriteFile(m.path("vdi", "mount"), []byte(line+"\n"), 0); err != nil {
			t.Fatalf("mount %s: %v", line, err)
		}
	}
	// A snapshot volume refuses writes.
	for _, name := range []string{"Alice:1", "Alice:snap1"} {
		p := m.path("volume", name)
		st, err := os.Stat(p)
		if err != nil || st.Size() != 16<<20 || st.Mode().Perm()&0o222 != 0 {
			t.Errorf("stat volume/%s: %v %v", name, err, st)
		}
		_, err = os.OpenFile(p, os.O_WRONLY, 0)
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
			t.Errorf("open volume/%s for writing: %v, want EROFS or EACCES", name, err)
		}
		if r := shell(t, m.Dir, "echo x > volume/"+name); r.Code == 0 {
			t.Errorf("echo x > volume/%s succeeded", name)
		}
	}
	// Writes to the working VDI leave the snapshot as it was.
	after := sheepfsRandom(t, 1<<20)
	wf, err := os.OpenFile(m.path("volume", "Alice"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.WriteAt(after, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := wf.Sync(); err != nil {
		t.Fatal(err)
	}
	wf.Close()
	if got := s.must(t, nil, "vdi", "read", "Alice", "1M", "1M"); got != string(after) {
		t.Errorf("collie does not see the write to Alice after the snapshot")
	}
	for _, p := range [][]string{{"volume", "Alice:1"}, {"volume", "Alice:snap1"}, {"snapshot", "Alice", "1"}, {"snapshot", "Alice", "snap1"}} {
		if got := readRange(t, m.path(p...), 1<<20, 1<<20); !bytes.Equal(got, before) {
			t.Errorf("%s does not hold the snapshot's bytes", strings.Join(p, "/"))
		}
	}
	// /snapshot browses without a mount.
	if entries, err := os.ReadDir(m.path("snapshot")); err != nil || len(entries) != 1 || entries[0].Name() != "Alice" {
		t.Errorf("ls snapshot/: %v %v", entries, err)
	}
	if target, err := os.Readlink(m.path("snapshot", "Alice", "snap1")); err != nil || target != "1" {
		t.Errorf("snapshot/Alice/snap1 -> %q, %v; want 1", target, err)
	}
	if _, err := os.OpenFile(m.path("snapshot", "Alice", "1"), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open snapshot/Alice/1 read-write: %v, want EROFS", err)
	}
	if _, err := os.Stat(m.path("snapshot", "Alice", "2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot/Alice/2: %v, want ENOENT", err)
	}
}

func TestSheepfsSheepGone(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	s := sheepfsCluster(t, nil, "Alice", "16M")
	data := sheepfsRandom(t, 1<<20)
	s.must(t, data, "vdi", "write", "Alice", "0", "1M")
	m := mountSheepfs(t, s, "-t", "5s")
	if err := os.WriteFile(m.path("vdi", "mount"), []byte("Alice\n"), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(m.path("volume", "Alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("read before the sheep died: %v", err)
	}

	s.Kill()
	start := time.Now()
	if _, err = f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after the sheep died: %v, want EIO", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("read after the sheep died took %v", d)
	}
	if info, _ := os.ReadFile(m.path("cluster", "info")); !strings.Contains(string(info), "failed to connect") {
		t.Errorf("cluster/info without a sheep: %q", info)
	}
	f.Close()
	// A fresh open with no handle left reads the inode again, and fails
	// too. The kernel sends RELEASE after close(2) returns, so an open
	// right away may still share the closed handle's table: try again
	// until the release has landed.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		g, err := os.Open(m.path("volume", "Alice"))
		if errors.Is(err, syscall.EIO) {
			break
		}
		if err == nil {
			g.Close()
		}
		if time.Now().After(deadline) {
			t.Errorf("open after the sheep died: %v, want EIO", err)
			break
		}
	}

	// It comes back on the same port: the mount works again.
	s.start("--nbd", "none")
	waitRunning(t, s)
	if got := readRange(t, m.path("volume", "Alice"), 0, 1<<20); !bytes.Equal(got, data) {
		t.Errorf("read after the sheep came back differs")
	}
}

func TestSheepfsDaemon(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	s := sheepfsCluster(t, nil)
	dir := t.TempDir()
	t.Cleanup(func() { sheepfsUnmount(t, dir) })

	// Without -f it returns once mounted.
	r := run(t, nil, bin("sheepfs"), "-p", strconv.Itoa(s.Port), dir)
	if r.Code != 0 || !sheepfsMounted(dir) {
		t.Fatalf("sheepfs (daemon): exit %d, mounted %v\n%s%s", r.Code, sheepfsMounted(dir), r.Stdout, r.Stderr)
	}
	pid := sheepfsPid(dir)
	if pid == 0 {
		t.Fatal("no sheepfs process serves the mount")
	}
	t.Cleanup(func() {
		if p, _ := os.FindProcess(pid); p != nil && sheepfsPid(dir) == pid {
			p.Kill()
		}
	})
	if b, err := os.ReadFile(filepath.Join(dir, "cluster", "info")); err != nil || !bytes.HasPrefix(b, []byte("Cluster status: running")) {
		t.Errorf("cluster/info: %v %q", err, b)
	}

	// A busy or missing mount point is a clear error.
	r = run(t, nil, bin("sheepfs"), "-p", strconv.Itoa(s.Port), dir)
	if r.Code == 0 || !strings.Contains(r.Stderr, "busy") {
		t.Errorf("second sheepfs on %s: exit %d %q, want a busy error", dir, r.Code, r.Stderr)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	r = run(t, nil, bin("sheepfs"), "-p", strconv.Itoa(s.Port), missing)
	if r.Code == 0 || !strings.Contains(r.Stderr, "does not exist") {
		t.Errorf("sheepfs on a missing dir: exit %d %q", r.Code, r.Stderr)
	}

	// SIGTERM unmounts and ends the daemon.
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for sheepfsMounted(dir) || sheepfsPid(dir) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGTERM: mounted %v, pid %d", sheepfsMounted(dir), sheepfsPid(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// fusermount3 -u ends a foreground one.
	m := mountSheepfs(t, s)
	// A mount just made can be busy for a moment (the full suite saw
	// EBUSY once, with other tests' processes at work): retry that.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		out, err := exec.Command("fusermount3", "-u", m.Dir).CombinedOutput()
		if err == nil {
			break
		}
		if !strings.Contains(string(out), "busy") || time.Since(start) > 5*time.Second {
			t.Fatalf("fusermount3 -u: %v %s", err, out)
		}
	}
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("sheepfs still running after fusermount3 -u")
	}
}

// sheepfsPid finds the sheepfs process whose last argument is dir.
func sheepfsPid(dir string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "sheepfs" && args[len(args)-1] == dir {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// TestSheepfsPermissions: only the mounting user gets in, unless
// --allow-other; then the kernel checks the modes and other users may
// read the reports but not the volumes or the control files.
func TestSheepfsPermissions(t *testing.T) {
	parallel(t)
	sheepfsNeedFuse(t)
	needTools(t, "setpriv")
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "needs root to act as another user")
	}
	s := sheepfsCluster(t, nil, "Alice", "16M")
	asNobody := func(line string) Result {
		return run(t, nil, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", line)
	}
	for _, allow := range []bool{false, true} {
		var extra []string
		if allow {
			extra = []string{"--allow-other"}
		}
		m := mountSheepfs(t, s, extra...)
		// t.TempDir makes 0700 directories: open the path to the mount.
		for d := filepath.Dir(m.Dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
		if err := os.WriteFile(m.path("vdi", "mount"), []byte("Alice\n"), 0); err != nil {
			t.Fatal(err)
		}
		r := asNobody("cat " + m.path("cluster", "info"))
		if got := r.Code == 0 && strings.HasPrefix(r.Stdout, "Cluster status"); got != allow {
			t.Errorf("allow-other=%v: another user reads cluster/info: %v (%s)", allow, got, r.Stderr)
		}
		for _, line := range []string{
			"head -c 1 " + m.path("volume", "Alice"),
			"echo Alice > " + m.path("vdi", "unmount"),
			"echo 1 > " + m.path("config", "page_cache"),
		} {
			if r := asNobody(line); r.Code == 0 {
				t.Errorf("allow-other=%v: another user may %s", allow, line)
			}
		}
		if _, err := os.Stat(m.path("volume", "Alice")); err != nil {
			t.Errorf("volume/Alice went away: %v", err)
		}
		sheepfsUnmount(t, m.Dir)
	}
}
