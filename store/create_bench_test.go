package store

import (
	"sync/atomic"
	"testing"
)

// What the first write-back write to a block of a VDI costs a store: a
// CreateOrWrite of 4 KiB into an object that does not exist yet, 32 at a
// time, through an unnamed file linked into place (O_TMPFILE) and through
// the lookup, create and rename of Create, in the same run.
//
//	go test -run '^$' -bench CreateOrWriteNew -benchtime 2000x ./store/
func BenchmarkCreateOrWriteNew(b *testing.B) {
	for _, path := range []string{"tmpfile", "rename"} {
		b.Run(path, func(b *testing.B) {
			s, err := Open(Config{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.noTmpfile.Store(path == "rename")
			data := randBytes(4096)
			var next atomic.Uint64
			b.SetParallelism(16) // 32 on two CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					oid := next.Add(1)
					if err := s.CreateOrWrite(ctx, oid, 4<<20, 8192, data, false); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
