package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// What chunk checksums cost on the data path: each benchmark runs the same
// I/O on a store with checksums and on one without (the reference), in the
// same run, on a 4 MiB object kept in the page cache.
//
//	go test -run '^$' -bench Checksum -benchtime 2s ./store/

func benchStores(b *testing.B, noSync bool, f func(b *testing.B, s *Store)) {
	for _, sums := range []bool{true, false} {
		name := "xxh3"
		if !sums {
			name = "none"
		}
		b.Run(name, func(b *testing.B) {
			s, err := Open(Config{Dir: b.TempDir(), NoSync: noSync, noChecksums: !sums})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Create(ctx, 1, 4<<20, 0, randBytes(4<<20), true); err != nil {
				b.Fatal(err)
			}
			f(b, s)
		})
	}
}

func BenchmarkChecksumWrite4KRandom(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			benchStores(b, false, func(b *testing.B, s *Store) {
				data := randBytes(4096)
				b.SetBytes(4096)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := s.WriteAt(ctx, 1, data, rand.Int64N(1024)*4096, sync); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkChecksumRead1MSequential(b *testing.B) {
	benchStores(b, true, func(b *testing.B, s *Store) {
		buf := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := s.ReadAt(ctx, 1, buf, int64(i%4)<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkChecksumRead4KRandom(b *testing.B) {
	benchStores(b, true, func(b *testing.B, s *Store) {
		buf := make([]byte, 4096)
		b.SetBytes(4096)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := s.ReadAt(ctx, 1, buf, rand.Int64N(1024)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
