package objcache

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/sheepdog-go/sheepdog/internal/bufpool"
)

// TestDirectFileMatchesPlain: unaligned reads and writes of a directFile
// (offsets, lengths and memory) give the bytes a plain file gives,
// including the file's last, partial block.
func TestDirectFileMatchesPlain(t *testing.T) {
	dir := t.TempDir()
	const size = 5*BlockSize + 100
	d, err := openCacheFile(filepath.Join(dir, "d"), size, true)
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer d.Close()
	df, ok := d.(*directFile)
	if !ok {
		t.Fatalf("directio gave a %T", d)
	}
	fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, df.f.Fd(), syscall.F_GETFL, 0)
	if errno != 0 || fl&syscall.O_DIRECT == 0 {
		t.Fatalf("cache file flags %#x (errno %v): O_DIRECT not set", fl, errno)
	}
	p, err := openCacheFile(filepath.Join(dir, "p"), size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		off := r.Int64N(size)
		n := 1 + r.IntN(int(min(size-off, 3*BlockSize)))
		// One byte in: the memory is not aligned either.
		raw := make([]byte, n+1)
		for j := range raw {
			raw[j] = byte(r.Uint32())
		}
		data := raw[1:]
		if i%2 == 0 {
			if _, err := d.WriteAt(data, off); err != nil {
				t.Fatalf("direct write [%d,+%d): %v", off, n, err)
			}
			if _, err := p.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, want := make([]byte, n+1)[1:], make([]byte, n)
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatalf("direct read [%d,+%d): %v", off, n, err)
		}
		if _, err := p.ReadAt(want, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read [%d,+%d) differs from the plain file's", off, n)
		}
	}
	all, want := make([]byte, size), make([]byte, size)
	if _, err := d.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, want) {
		t.Fatal("the whole file differs from the plain file's")
	}
}

// TestDirectFileConcurrentEdges: writes into disjoint bytes of one block,
// at once, all survive (an edge block's read-modify-write never undoes
// another write), and aligned writes beside them too.
func TestDirectFileConcurrentEdges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d")
	d, err := openCacheFile(path, 4*BlockSize, true)
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer d.Close()
	const writers = 16
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			part := bytes.Repeat([]byte{byte(w + 1)}, BlockSize/writers)
			for i := 0; i < 50; i++ {
				if _, err := d.WriteAt(part, int64(w*len(part))); err != nil {
					t.Error(err)
					return
				}
				blk, bp := bounce(BlockSize)
				for j := range blk {
					blk[j] = byte(w + 1)
				}
				_, err := d.WriteAt(blk, 2*BlockSize)
				bufpool.Put(bp)
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		n := BlockSize / writers
		if !bytes.Equal(got[w*n:(w+1)*n], bytes.Repeat([]byte{byte(w + 1)}, n)) {
			t.Fatalf("writer %d's bytes in block 0 were lost", w)
		}
	}
	b2 := got[2*BlockSize : 3*BlockSize]
	if !bytes.Equal(b2, bytes.Repeat(b2[:1], BlockSize)) {
		t.Fatal("block 2 mixes two aligned writes")
	}
}
