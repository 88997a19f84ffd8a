package md

import (
	"context"
	"path/filepath"
	"testing"
)

// The md layer's cost on the data path: 4 KiB reads of cached objects
// through one disk's store and through the md layer over three disks
// (compare the two in one run).
func BenchmarkReadAt4K(b *testing.B) {
	root := b.TempDir()
	s, err := Open(Config{MetaDir: filepath.Join(root, "meta"), Disks: []string{filepath.Join(root, "d0"), filepath.Join(root, "d1"), filepath.Join(root, "d2")}, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ids := oids(64)
	for _, oid := range ids {
		if err := s.Create(ctx, oid, objSize, 0, payload(oid), false); err != nil {
			b.Fatal(err)
		}
	}
	waitSettledB(b, s)
	run := func(b *testing.B, read func(oid uint64, buf []byte) error) {
		b.SetBytes(4096)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 4096)
			i := 0
			for pb.Next() {
				if err := read(ids[i%len(ids)], buf); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	}
	b.Run("disk-store", func(b *testing.B) {
		l := s.lay.Load()
		run(b, func(oid uint64, buf []byte) error { return l.home(oid).st.ReadAt(ctx, oid, buf, 0) })
	})
	b.Run("md", func(b *testing.B) {
		run(b, func(oid uint64, buf []byte) error { return s.ReadAt(ctx, oid, buf, 0) })
	})
}

func waitSettledB(b *testing.B, s *Store) {
	for {
		l := s.lay.Load()
		if l.settled && len(l.draining) == 0 {
			return
		}
	}
}
