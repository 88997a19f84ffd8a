package md

import (
	"path/filepath"
	"testing"
)

// A reweight's space (SetNodeSpace) is what NodeSpace answers from then
// on, also after the store is opened again, with DIR alone and with
// several disks.
func TestSetNodeSpaceIsKept(t *testing.T) {
	for _, disks := range [][]string{nil, {"d0", "d1"}} {
		root := t.TempDir()
		var paths []string
		for _, d := range disks {
			paths = append(paths, filepath.Join(root, d))
		}
		meta := filepath.Join(root, "meta")
		s := openMD(t, meta, paths...)
		if err := s.SetNodeSpace(123 << 20); err != nil {
			t.Fatal(err)
		}
		if got, err := s.NodeSpace(); err != nil || got != 123<<20 {
			t.Fatalf("%d disks: NodeSpace %d, %v after SetNodeSpace(%d)", len(disks), got, err, 123<<20)
		}
		s.Close()
		s = openMD(t, meta, paths...)
		if got, err := s.NodeSpace(); err != nil || got != 123<<20 {
			t.Fatalf("%d disks: NodeSpace %d, %v after a restart", len(disks), got, err)
		}
		s.Close()
	}
}
