package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "obj"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sync := range []bool{false, true} {
		if err := checkStore(dir, sync); err != nil {
			t.Fatalf("healthy store (sync %v): %v", sync, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "obj", storeProbe)); !os.IsNotExist(err) {
		t.Fatalf("probe left behind: %v", err)
	}
	failed := make(chan error, 1)
	go watchStore(context.Background(), dir, 10*time.Millisecond, 2, func(err error) { failed <- err })
	select {
	case err := <-failed:
		t.Fatalf("healthy store reported failed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	os.RemoveAll(filepath.Join(dir, "obj"))
	select {
	case err := <-failed:
		if !os.IsNotExist(err) {
			t.Fatalf("failure reported as %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a removed object dir was not reported")
	}
}

// A removed object dir is reported at once (inotify), not at the next
// periodic check.
func TestWatchStoreSeesRemovalAtOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "obj"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failed := make(chan error, 1)
	go watchStore(ctx, dir, time.Hour, 2, func(err error) { failed <- err })
	time.Sleep(50 * time.Millisecond) // the watch is set up
	start := time.Now()
	os.RemoveAll(filepath.Join(dir, "obj"))
	select {
	case err := <-failed:
		if !os.IsNotExist(err) {
			t.Fatalf("failure reported as %v", err)
		}
		t.Logf("reported %v after the removal", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("a removed object dir was not reported within 5 s with hourly checks")
	}
}
