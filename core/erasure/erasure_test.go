package erasure

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestParseCopies(t *testing.T) {
	for _, tc := range []struct {
		in     string
		copies uint8
		policy Policy
		ok     bool
	}{
		{"3", 3, 0, true},
		{"1", 1, 0, true},
		{"31", 31, 0, true},
		{"32", 0, 0, false},
		{"0", 0, 0, false},
		{"", 0, 0, false},
		{"x", 0, 0, false},
		{"-1", 0, 0, false},
		{"4:2", 6, 0x22, true},
		{"2:1", 3, 0x11, true},
		{"8:3", 11, 0x43, true},
		{"16:15", 31, 0x8f, true},
		{"16:16", 0, 0, false},
		{"3:1", 0, 0, false},
		{"4:0", 0, 0, false},
		{"32:1", 0, 0, false},
		{"4:x", 0, 0, false},
		{"4:", 4, 0, true},       // strtok: no second field
		{":2", 2, 0, true},       // strtok skips the empty first field
		{"4:2:9", 6, 0x22, true}, // a third field is ignored
	} {
		c, p, ok := ParseCopies(tc.in)
		if c != tc.copies || p != tc.policy || ok != tc.ok {
			t.Errorf("ParseCopies(%q) = %d, %#x, %v; want %d, %#x, %v", tc.in, c, p, ok, tc.copies, tc.policy, tc.ok)
		}
	}
}

func TestPolicy(t *testing.T) {
	for d := range 20 {
		for p := range 17 {
			pol, err := NewPolicy(d, p)
			valid := (d == 2 || d == 4 || d == 8 || d == 16) && p >= 1 && p <= 15
			if (err == nil) != valid {
				t.Fatalf("NewPolicy(%d, %d) error %v, valid %v", d, p, err, valid)
			}
			if !valid {
				continue
			}
			if pol.Data() != d || pol.Parity() != p || pol.Total() != d+p || !pol.Valid() || !pol.Erasure() {
				t.Fatalf("NewPolicy(%d, %d) = %#x: %d:%d", d, p, pol, pol.Data(), pol.Parity())
			}
			if got := Redundancy(uint8(d+p), pol); got != strconv.Itoa(d)+":"+strconv.Itoa(p) {
				t.Fatalf("Redundancy = %q", got)
			}
		}
	}
	if Redundancy(3, 0) != "3" || Policy(0x30).Valid() || Policy(0x20).Valid() {
		t.Fatal("replication or invalid policies misjudged")
	}
	if !strings.HasPrefix(InvalidCopies("16:16"), "Invalid parameter 16:16\nTo create replicated vdi, set -c x\n  x(1 to 31)") {
		t.Fatalf("message %q", InvalidCopies("16:16"))
	}
}

func TestSpanOf(t *testing.T) {
	p, _ := NewPolicy(4, 2)
	for _, tc := range []struct {
		off  int64
		n    int
		want Span
	}{
		{0, 512, Span{0, 1, 0, 128}},
		{0, 4096, Span{0, 8, 0, 1024}},
		{100, 10, Span{0, 1, 0, 128}},
		{510, 4, Span{0, 2, 0, 256}},
		{1024, 1, Span{2, 3, 256, 128}},
		{4<<20 - 512, 512, Span{8191, 8192, 8191 * 128, 128}},
		{512, 0, Span{1, 1, 128, 0}},
	} {
		if got := p.SpanOf(tc.off, tc.n); got != tc.want {
			t.Errorf("SpanOf(%d, %d) = %+v, want %+v", tc.off, tc.n, got, tc.want)
		}
	}
	if !Aligned(1024, 512) || Aligned(1, 512) || Aligned(0, 100) {
		t.Fatal("Aligned")
	}
}

// TestJoinAt: every window of stripes split into strips reads back the
// same bytes through JoinAt, for every data strip count.
func TestJoinAt(t *testing.T) {
	stripes := make([]byte, 4*StripeSize)
	for i := range stripes {
		stripes[i] = byte(i*7 + i/251)
	}
	for _, d := range []int{2, 4, 8, 16} {
		p, _ := NewPolicy(d, 1)
		shards := make([][]byte, d)
		for j := range shards {
			shards[j] = make([]byte, len(stripes)/d)
		}
		p.Split(stripes, shards)
		for _, w := range [][2]int{{0, len(stripes)}, {0, 1}, {1, 1}, {100, 700}, {511, 2}, {512, 512}, {1000, 1048}, {2047, 1}, {7, 2040}} {
			out := make([]byte, w[1])
			p.JoinAt(shards, w[0], out)
			if !bytes.Equal(out, stripes[w[0]:w[0]+w[1]]) {
				t.Fatalf("%d:1 JoinAt(%d, %d) differs", d, w[0], w[1])
			}
		}
	}
}

// lcg is the generator testdata/sheepdog_parity.txt's stripes came from.
func lcg(seed uint32) []byte {
	b := make([]byte, StripeSize)
	x := seed
	for i := range b {
		x = x*1103515245 + 12345
		b[i] = byte(x >> 16)
	}
	return b
}

// TestSheepdogParity checks the parity strips against those Sheepdog's
// lib/fec.c (ec_encode) computed for the same stripes.
func TestSheepdogParity(t *testing.T) {
	f, err := os.Open("testdata/sheepdog_parity.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		d, _ := strconv.Atoi(fs[0])
		p, _ := strconv.Atoi(fs[1])
		want, err := hex.DecodeString(fs[2])
		if err != nil {
			t.Fatal(err)
		}
		pol, err := NewPolicy(d, p)
		if err != nil {
			t.Fatal(err)
		}
		c, err := CodecFor(pol)
		if err != nil {
			t.Fatal(err)
		}
		ss := pol.StripSize()
		shards := make([][]byte, d+p)
		for i := range shards {
			shards[i] = make([]byte, ss)
		}
		if err := c.EncodeStripes(lcg(uint32(12345+d*100+p)), shards); err != nil {
			t.Fatal(err)
		}
		if got := bytes.Join(shards[d:], nil); !bytes.Equal(got, want) {
			t.Errorf("%d:%d parity differs from Sheepdog's:\n got %x\nwant %x", d, p, got, want)
		}
		n++
	}
	if n != 20 {
		t.Fatalf("%d vectors", n)
	}
}

// TestReconstructAnyD: for random stripes and every policy, losing any p
// strips (data or parity) leaves the other d enough to rebuild all of them.
func TestReconstructAnyD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, d := range []int{2, 4, 8, 16} {
		for _, p := range []int{1, 2, 3, 15} {
			pol, _ := NewPolicy(d, p)
			c, err := CodecFor(pol)
			if err != nil {
				t.Fatal(err)
			}
			stripes := make([]byte, 7*StripeSize)
			for i := range stripes {
				stripes[i] = byte(r.Uint32())
			}
			n := len(stripes) / d
			orig := make([][]byte, d+p)
			for i := range orig {
				orig[i] = make([]byte, n)
			}
			if err := c.EncodeStripes(stripes, orig); err != nil {
				t.Fatal(err)
			}
			back := make([]byte, len(stripes))
			pol.Join(orig[:d], back)
			if !bytes.Equal(back, stripes) {
				t.Fatalf("%d:%d: Join(Split) differs", d, p)
			}
			for trial := range 20 {
				shards := make([][]byte, d+p)
				for i := range shards {
					shards[i] = append([]byte(nil), orig[i]...)
				}
				lost := r.Perm(d + p)[:p]
				for _, i := range lost {
					shards[i] = nil
				}
				if err := c.Reconstruct(shards, false); err != nil {
					t.Fatalf("%d:%d lost %v: %v", d, p, lost, err)
				}
				for i := range shards {
					if !bytes.Equal(shards[i], orig[i]) {
						t.Fatalf("%d:%d trial %d lost %v: strip %d rebuilt wrong", d, p, trial, lost, i)
					}
				}
				// RebuildOne fills one lost strip in place and leaves
				// the others lost.
				for _, i := range lost {
					shards[i] = nil
				}
				room := make([]byte, 0, n)
				shards[lost[0]] = room
				if err := c.RebuildOne(shards, lost[0]); err != nil {
					t.Fatalf("%d:%d RebuildOne(%d): %v", d, p, lost[0], err)
				}
				if !bytes.Equal(room[:n], orig[lost[0]]) || !bytes.Equal(shards[lost[0]], orig[lost[0]]) {
					t.Fatalf("%d:%d RebuildOne(%d) rebuilt it wrong or not in place", d, p, lost[0])
				}
				for _, i := range lost[1:] {
					if len(shards[i]) != 0 {
						t.Fatalf("%d:%d RebuildOne(%d) rebuilt strip %d too", d, p, lost[0], i)
					}
				}
				if err := c.Reconstruct(shards, false); err != nil {
					t.Fatal(err)
				}
				// One more lost is too many.
				for _, i := range r.Perm(d + p)[:p+1] {
					shards[i] = nil
				}
				if err := c.Reconstruct(shards, false); err == nil {
					t.Fatalf("%d:%d: rebuilt from fewer than d strips", d, p)
				}
			}
			ok, err := c.Verify(orig)
			if err != nil || !ok {
				t.Fatalf("%d:%d: Verify = %v, %v", d, p, ok, err)
			}
			orig[d][0] ^= 1
			if ok, _ := c.Verify(orig); ok {
				t.Fatalf("%d:%d: a flipped parity byte verified", d, p)
			}
		}
	}
}

func FuzzParseCopies(f *testing.F) {
	for _, s := range []string{"3", "4:2", "16:16", "3:1", ":", "2:1:1", "99999999999999999999:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, p, ok := ParseCopies(s)
		if !ok {
			return
		}
		if c == 0 || c > maxCopies || !p.Valid() || p.Erasure() && int(c) != p.Total() {
			t.Fatalf("ParseCopies(%q) = %d, %#x", s, c, p)
		}
	})
}
