package fuse

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// maxRequest is the largest read or write the kernel sends in one FUSE
// request (go-fuse's and Linux's ceiling), and the I/O size stat
// suggests.
const maxRequest = 1 << 20

// Mount checks dir and mounts f there. The returned server is already
// serving; Wait on it returns after an unmount (Unmount, fusermount3 -u).
func (f *FS) Mount(dir string, debug bool) (*gofuse.Server, error) {
	dir, err := CheckMountpoint(dir)
	if err != nil {
		return nil, err
	}
	entry, attr, neg := time.Second, time.Second, time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
		MountOptions: gofuse.MountOptions{
			FsName: "sheepfs",
			Name:   "sheepfs",
			// Only the mounting user unless asked (as Sheepdog's
			// allow_root); shared mounts get the kernel's mode checks.
			AllowOther: f.cfg.AllowOther,
			// Big requests: 1 MiB reads and writes, readahead as large
			// as the kernel allows, and with direct I/O the kernel may
			// split a large read(2) into requests sent at once.
			MaxWrite:          maxRequest,
			MaxReadAhead:      maxRequest,
			MaxBackground:     64,
			ExtraCapabilities: gofuse.CAP_ASYNC_DIO,
			// No extended attributes: the kernel then stops asking for
			// security.capability before every write.
			DisableXAttrs: true,
			// Replies are in-memory buffers; go-fuse v2.12.1 would still
			// try a splice per read (and log its failure whenever a 1 MiB
			// reply outgrows the pipe) before writing them.
			DisableSplice: true,
			Debug:         debug,
			Logger:        log.New(os.Stderr, "", log.LstdFlags),
		},
	}
	if f.cfg.AllowOther {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	server, err := fs.Mount(dir, f.root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	raiseReadahead(dir, maxRequest)
	return server, nil
}

// CheckMountpoint returns dir as an absolute path if sheepfs can mount
// there, or an error that says what is wrong: missing, not a directory,
// already a mount point (busy), or a dead FUSE mount.
func CheckMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mount point %s does not exist", abs)
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("mount point %s is a dead FUSE mount (transport endpoint is not connected); unmount it first: fusermount3 -u %s", abs, abs)
	case err != nil:
		return "", fmt.Errorf("mount point %s: %w", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("mount point %s is not a directory", abs)
	}
	if what, ok := mountedAt(abs); ok {
		return "", fmt.Errorf("mount point %s is busy: %s is already mounted there", abs, what)
	}
	if err := unix.Access(abs, unix.W_OK); err != nil {
		return "", fmt.Errorf("mount point %s: %w", abs, err)
	}
	return abs, nil
}

// mountedAt reports what is mounted at dir, from /proc/self/mountinfo.
func mountedAt(dir string) (string, bool) {
	fh, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		what := "a file system"
		for i, fld := range fields {
			if fld == "-" && i+2 < len(fields) {
				what = fields[i+2] + " (" + fields[i+1] + ")"
				break
			}
		}
		return what, true
	}
	return "", false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// raiseReadahead lifts the mount's readahead window to n bytes. The kernel
// caps what the FUSE handshake may ask for at its default (128 KiB); the
// backing device's read_ahead_kb in sysfs is the knob that is left. It
// only matters with the page cache on, and failing (not root) is fine.
func raiseReadahead(dir string, n int) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	os.WriteFile(path, []byte(strconv.Itoa(n>>10)), 0)
}

// Unmount unmounts the server's mount point; when it is busy (files open,
// a shell inside) it detaches it lazily instead, and the server stops once
// the last user is gone.
func Unmount(server *gofuse.Server, dir string) error {
	err := server.Unmount()
	if err == nil {
		return nil
	}
	if out, lerr := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); lerr == nil {
		return nil
	} else if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil {
		return fmt.Errorf("unmount %s: %v; lazy unmount: %s %v", dir, err, strings.TrimSpace(string(out)), uerr)
	}
	return nil
}
