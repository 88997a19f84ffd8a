package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestQemuFrontends: a VDI written through QEMU's flows reads the same
// through collie and through NBD (nbdcopy), snapshot included; and what
// collie and nbdcopy write reads the same through QEMU's flows.
func TestQemuFrontends(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	s := startSheep(t, "--nbd", addr)
	s.must(t, nil, "cluster", "format", "-c", "1")
	d := newQemuDriver(t, s)
	const size = 32 << 20
	d.mustCreate("Alice", qemuCreateOpts{size: size})

	// Writes of several shapes: inside one object, across a boundary,
	// a whole object, and holes left between them.
	want := make([]byte, size)
	img := d.mustOpen("Alice")
	for _, w := range []struct{ off, n int }{{0, 4096}, {3<<20 + 512, 2 << 20}, {12 << 20, 4 << 20}, {size - 8192, 8192}} {
		data := randomBytes(w.n)
		img.mustWrite(uint64(w.off), data)
		copy(want[w.off:], data)
	}
	if res, err := img.flush(); err != nil || (res != sdResSuccess && res != sdResInvalidParms) {
		t.Fatalf("flush: %#x %v", res, err)
	}
	img.mustClose()
	if got := collieReadAt(t, s, "Alice", 0, size); !bytes.Equal(got, want) {
		t.Fatal("collie reads other bytes than QEMU wrote")
	}

	// collie writes, QEMU reads.
	patch := randomBytes(3 << 20)
	s.must(t, patch, "vdi", "write", "Alice", strconv.Itoa(20<<20), strconv.Itoa(len(patch)))
	copy(want[20<<20:], patch)
	img = d.mustOpen("Alice")
	if got := img.mustRead(0, size); !bytes.Equal(got, want) {
		t.Fatal("QEMU reads other bytes than collie wrote")
	}
	// A snapshot through QEMU, then a COW write.
	img.mustSnapshot("s1")
	snapWant := bytes.Clone(want)
	img.mustWrite(4096, []byte("after the snapshot"))
	copy(want[4096:], "after the snapshot")
	img.mustClose()

	t.Run("nbd", func(t *testing.T) {
		needTools(t, "nbdcopy")
		dir := t.TempDir()
		out := filepath.Join(dir, "out.raw")
		tool(t, "nbdcopy", nbdURI(addr, "Alice"), out)
		if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
			t.Fatal("NBD reads other bytes than QEMU wrote")
		}
		tool(t, "nbdcopy", nbdURI(addr, "Alice:1"), out)
		if got, _ := os.ReadFile(out); !bytes.Equal(got, snapWant) {
			t.Fatal("NBD export Alice:1 differs from the QEMU snapshot")
		}

		// NBD writes, QEMU reads.
		src := make([]byte, size)
		copy(src[1<<20:], randomBytes(5<<20))
		copy(src[24<<20:], randomBytes(1<<20))
		in := filepath.Join(dir, "in.raw")
		if err := os.WriteFile(in, src, 0o600); err != nil {
			t.Fatal(err)
		}
		tool(t, "nbdcopy", in, nbdURI(addr, "Alice"))
		d := newQemuDriver(t, s)
		img := d.mustOpen("Alice")
		if got := img.mustRead(0, size); !bytes.Equal(got, src) {
			t.Fatal("QEMU reads other bytes than NBD wrote")
		}
		img.mustClose()
	})
}
