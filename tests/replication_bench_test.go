package tests

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// BenchmarkReplicatedWrite writes 128 MiB through collie into a one-node
// copies=1 cluster and into a three-node copies=3 cluster on loopback, in
// the same run, and reports each one's MiB/s and their ratio.
func BenchmarkReplicatedWrite(b *testing.B) {
	data := make([]byte, 128<<20)
	rand.Read(data)
	measure := func(n, copies int) float64 {
		sheeps := startClusterTB(b, n)
		sheeps[0].must(b, nil, "cluster", "format", "--copies="+strconv.Itoa(copies))
		best := 0.0
		for i := 0; i < b.N; i++ {
			name := fmt.Sprintf("bench%d", i)
			sheeps[0].must(b, nil, "vdi", "create", name, "256M")
			t0 := time.Now()
			sheeps[0].must(b, data, "vdi", "write", name, "0", strconv.Itoa(len(data)))
			mibs := float64(len(data)) / (1 << 20) / time.Since(t0).Seconds()
			best = max(best, mibs)
		}
		for _, s := range sheeps {
			s.Kill()
		}
		return best
	}
	one := measure(1, 1)
	three := measure(3, 3)
	b.ReportMetric(one, "MiB/s-1node")
	b.ReportMetric(three, "MiB/s-3node")
	b.ReportMetric(three/one, "ratio")
	fmt.Printf("\nwrite 128 MiB via collie: 1 node copies=1 %.1f MiB/s, 3 nodes copies=3 %.1f MiB/s, ratio %.2f\n", one, three, three/one)
}

// startClusterTB is startCluster for benchmarks.
func startClusterTB(t testing.TB, n int) []*Sheep {
	var sheeps []*Sheep
	for i := 0; i < n; i++ {
		extra := []string{"-z", strconv.Itoa(i)}
		if i > 0 {
			extra = append(extra, "--join", sheeps[0].Addr())
		}
		sheeps = append(sheeps, startSheep(t, extra...))
	}
	for _, s := range sheeps {
		waitNodesTB(t, s, n)
	}
	return sheeps
}
