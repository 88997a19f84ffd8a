package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// spanRecorder is an io.WriterAt that records the writes it is given and
// fails the one numbered failAt (from 1; 0 never).
type spanRecorder struct {
	writes [][2]int64 // off, len
	failAt int
}

func (r *spanRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, [2]int64{off, int64(len(p))})
	if len(r.writes) == r.failAt {
		return 0, errors.New("injected")
	}
	return len(p), nil
}

func TestWriteSpansSplitsAtSpanBoundaries(t *testing.T) {
	const S = writeSpan
	tests := []struct {
		name string
		off  int64
		n    int64
		want [][2]int64
	}{
		{"small inside a span", 4096, 4096, [][2]int64{{4096, 4096}}},
		{"one whole span", S, S, [][2]int64{{S, S}}},
		{"crosses one boundary", S - 4096, 8192, [][2]int64{{S - 4096, 4096}, {S, 4096}}},
		{"1 MiB aligned", 0, 1 << 20, spans(0, 16, S)},
		{"1 MiB unaligned", 512, 1 << 20, append(append([][2]int64{{512, S - 512}}, spans(S, 15, S)...), [2]int64{16 * S, 512})},
		{"empty", 100, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r spanRecorder
			if err := writeSpans(&r, make([]byte, tt.n), tt.off); err != nil {
				t.Fatal(err)
			}
			if len(r.writes) != len(tt.want) {
				t.Fatalf("writes %v, want %v", r.writes, tt.want)
			}
			for i := range tt.want {
				if r.writes[i] != tt.want[i] {
					t.Fatalf("write %d is %v, want %v (all: %v)", i, r.writes[i], tt.want[i], r.writes)
				}
			}
		})
	}
}

func spans(off int64, n int, size int64) [][2]int64 {
	var s [][2]int64
	for i := 0; i < n; i++ {
		s = append(s, [2]int64{off + int64(i)*size, size})
	}
	return s
}

func TestWriteSpansStopsAtFirstError(t *testing.T) {
	r := spanRecorder{failAt: 2}
	if err := writeSpans(&r, make([]byte, 3*writeSpan), 0); err == nil {
		t.Fatal("no error from a failed piece")
	}
	if len(r.writes) != 2 {
		t.Fatalf("%d writes after the failure at the 2nd, want 2", len(r.writes))
	}
}

func TestWriteSpansBytesLandInPlace(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 3*writeSpan+1000)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	const off = writeSpan - 300
	if err := writeSpans(f, data, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes read back differ from those written")
	}
}
