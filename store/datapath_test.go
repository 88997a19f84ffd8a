package store

import "testing"

// The data path on an open object allocates nothing per request.
func TestDataPathDoesNotAllocate(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 1<<20, 0, nil)
	buf := make([]byte, 4096)
	for name, op := range map[string]func(){
		"ReadAt":         func() { _ = s.ReadAt(ctx, 1, buf, 8192) },
		"WriteAt":        func() { _ = s.WriteAt(ctx, 1, buf, 8192, false) },
		"WriteAt synced": func() { _ = s.WriteAt(ctx, 1, buf, 8192, true) },
		"Punch":          func() { _ = s.Punch(ctx, 1, 8192, 4096, false) },
	} {
		if n := testing.AllocsPerRun(50, op); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// A Create without sync leaves the directory to sync; the next synced
// write, punch or Sync of any object syncs it, so a flushed object never
// loses its name in a power cut.
func TestUnsyncedCreateNameIsSyncedByNextSync(t *testing.T) {
	s := openStore(t, Config{})
	mustCreate(t, s, 1, 4096, 0, nil)
	if s.dirDirty.Load() {
		t.Fatal("directory marked dirty after a synced Create")
	}
	for name, syncOp := range map[string]func() error{
		"Sync":           func() error { return s.Sync(ctx, 1) },
		"synced WriteAt": func() error { return s.WriteAt(ctx, 1, []byte{1}, 0, true) },
		"synced Punch":   func() error { return s.Punch(ctx, 1, 0, 1, true) },
	} {
		if err := s.Create(ctx, 2, 4096, 0, []byte("x"), false); err != nil {
			t.Fatal(err)
		}
		if !s.dirDirty.Load() {
			t.Fatal("directory not marked dirty after an unsynced Create")
		}
		if err := syncOp(); err != nil {
			t.Fatal(err)
		}
		if s.dirDirty.Load() {
			t.Fatalf("%s did not sync the directory", name)
		}
	}
}
