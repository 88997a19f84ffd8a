package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// storeProbe is the file the health check writes in the object dir.
const storeProbe = ".health"

// syncEvery is how many probes of watchStore go by between two that
// also fsync the probe. An fsync of a new file commits the filesystem's
// journal, which waits for the data of every file written since the last
// commit; every 500 ms on each sheep, that stalled the writes of all of
// them (13 sheeps of a bench: 26 forced commits a second). A removed,
// read-only or immutable dir fails the create, which every probe does;
// the fsync only adds a disk that fails writeback with EIO.
const syncEvery = 20

// checkStore reports whether the object directory of the store at dir
// still takes writes: it exists, and a small file can be created, written
// and removed in it; with sync, the file is also synced.
func checkStore(dir string, sync bool) error {
	if err := checkObjDir(dir); err != nil {
		return err
	}
	p := filepath.Join(dir, "obj", storeProbe)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		if full(err) {
			return nil
		}
		return err
	}
	_, werr := f.Write([]byte{1})
	var serr error
	if sync {
		serr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(p)
	for _, e := range []error{werr, serr, cerr, rerr} {
		if e != nil && !full(e) {
			return e
		}
	}
	return nil
}

// watchGone returns a channel that receives when the directory obj is
// deleted, moved or unmounted (inotify), until ctx ends; a channel that
// never receives if it cannot be watched (the periodic check remains).
func watchGone(ctx context.Context, obj string) <-chan struct{} {
	wake := make(chan struct{}, 1)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return wake
	}
	if _, err := unix.InotifyAddWatch(fd, obj, unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT); err != nil {
		unix.Close(fd)
		return wake
	}
	f := os.NewFile(uintptr(fd), "inotify:"+obj)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	return wake
}

// checkObjDir reports whether the object directory of the store at dir
// is there.
func checkObjDir(dir string) error {
	obj := filepath.Join(dir, "obj")
	fi, err := os.Stat(obj)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", obj)
	}
	return nil
}

// full reports a filesystem out of space or quota: the store is full, not
// failed. It keeps serving reads and answers writes NO_SPACE, as
// Sheepdog's does; leaving the cluster would move its objects onto the
// others, which may be as full.
func full(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// probeEvery is how many checks of watchStore go by between two that
// write the probe file (checkStore); the others only stat the object
// dir, which costs no inode: a removed dir is seen within two short
// intervals, a dir that takes no writes within two probes.
const probeEvery = 5

// watchStore checks the store every interval; after failures checks in a
// row it calls fail once with the last error and returns. A node whose
// disk is gone must leave the cluster (a new epoch), so that its objects
// are recovered on the others, instead of answering EIO while recovery
// retries forever.
//
// The object dir is also watched with inotify: after its removal, a
// rename or an unmount, a dir that is not there is a fact, not a
// transient failure, and the node leaves at once, before more requests
// are served from handles of files that no longer have a name
// (Sheepdog's leaves at the failing I/O, which it opens per request).
func watchStore(ctx context.Context, dir string, interval time.Duration, failures int, fail func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	gone := watchGone(ctx, filepath.Join(dir, "obj"))
	bad, n := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
			if err := checkObjDir(dir); err != nil {
				fail(err)
				return
			}
			continue // put back already
		case <-t.C:
		}
		var err error
		if bad > 0 || n%probeEvery == 0 {
			err = checkStore(dir, n%(probeEvery*syncEvery) == 0)
		} else {
			err = checkObjDir(dir)
		}
		n++
		if err == nil {
			bad = 0
			continue
		}
		if bad++; bad >= failures {
			fail(err)
			return
		}
	}
}
