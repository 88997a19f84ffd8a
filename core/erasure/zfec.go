package erasure

// The generator matrix of Sheepdog's code (lib/fec.c, after zfec and Luigi
// Rizzo's fec), derived here from its definition:
//
//   - GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1 (0x11d), α = 2, the
//     same field klauspost/reedsolomon computes in.
//   - A (d+p)×d Vandermonde matrix V over the points 0, α^0, α^1, ...,
//     α^(d+p-2): row 0 is (1, 0, ..., 0), row r+1 is (α^(r·c)) for column c.
//   - The systematic matrix E = V · inv(V[0:d]): identity on top, and rows
//     d..d+p-1 give the parity strips.
//
// klauspost/reedsolomon's own matrix evaluates at the points 0, 1, 2, 3, ...
// instead, which agrees only up to three strips, so the parity rows are
// passed to it as a custom matrix (parityRows).

var gfExp [510]byte
var gfLog [256]int

func init() {
	x := 1
	for i := range 255 {
		gfExp[i] = byte(x)
		gfLog[x] = i
		x <<= 1
		if x&0x100 != 0 {
			x ^= 0x11d
		}
	}
	for i := 255; i < len(gfExp); i++ {
		gfExp[i] = gfExp[i-255]
	}
}

func gfMul(a, b byte) byte {
	if a == 0 || b == 0 {
		return 0
	}
	return gfExp[gfLog[a]+gfLog[b]]
}

func gfInv(a byte) byte { return gfExp[255-gfLog[a]] }

// vandermonde is zfec's (d+p)×d starting matrix.
func vandermonde(d, total int) [][]byte {
	m := make([][]byte, total)
	m[0] = make([]byte, d)
	m[0][0] = 1
	for r := 1; r < total; r++ {
		m[r] = make([]byte, d)
		for c := range d {
			m[r][c] = gfExp[((r-1)*c)%255]
		}
	}
	return m
}

// invert returns the inverse of the square matrix a (Gauss-Jordan), or nil
// when it is singular. a is not changed.
func invert(a [][]byte) [][]byte {
	n := len(a)
	w := make([][]byte, n)
	for i := range a {
		w[i] = make([]byte, 2*n)
		copy(w[i], a[i])
		w[i][n+i] = 1
	}
	for col := range n {
		piv := -1
		for r := col; r < n; r++ {
			if w[r][col] != 0 {
				piv = r
				break
			}
		}
		if piv < 0 {
			return nil
		}
		w[col], w[piv] = w[piv], w[col]
		if inv := gfInv(w[col][col]); inv != 1 {
			for c := range w[col] {
				w[col][c] = gfMul(w[col][c], inv)
			}
		}
		for r := range n {
			if r == col || w[r][col] == 0 {
				continue
			}
			f := w[r][col]
			for c := range w[r] {
				w[r][c] ^= gfMul(f, w[col][c])
			}
		}
	}
	out := make([][]byte, n)
	for i := range w {
		out[i] = w[i][n:]
	}
	return out
}

// mul multiplies a (r×k) by b (k×c).
func mul(a, b [][]byte) [][]byte {
	out := make([][]byte, len(a))
	for i := range a {
		out[i] = make([]byte, len(b[0]))
		for j := range b[0] {
			var s byte
			for k := range b {
				s ^= gfMul(a[i][k], b[k][j])
			}
			out[i][j] = s
		}
	}
	return out
}

// parityRows returns rows d..d+p-1 of Sheepdog's systematic matrix.
func parityRows(d, p int) [][]byte {
	v := vandermonde(d, d+p)
	return mul(v[d:], invert(v[:d]))
}
