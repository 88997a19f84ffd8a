package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// storeProbe is the file the health check writes in the object dir.
const storeProbe = ".health"

// checkStore reports whether the object directory of the store at dir
// still takes writes: it exists, and a small file can be created, written,
// synced and removed in it.
func checkStore(dir string) error {
	obj := filepath.Join(dir, "obj")
	fi, err := os.Stat(obj)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", obj)
	}
	p := filepath.Join(obj, storeProbe)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		if full(err) {
			return nil
		}
		return err
	}
	_, werr := f.Write([]byte{1})
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(p)
	for _, e := range []error{werr, serr, cerr, rerr} {
		if e != nil && !full(e) {
			return e
		}
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

// watchStore checks the store every interval; after failures checks in a
// row it calls fail once with the last error and returns. A node whose
// disk is gone must leave the cluster (a new epoch), so that its objects
// are recovered on the others, instead of answering EIO while recovery
// retries forever.
func watchStore(ctx context.Context, dir string, interval time.Duration, failures int, fail func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	bad := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := checkStore(dir)
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
