package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestFrontendObserve(t *testing.T) {
	r := New()
	f := r.Frontend("nbd", map[uint8]string{1: "write", 0: "read"})
	f.Observe(1, 4096, 0, 3*time.Millisecond, false)
	f.Observe(1, 8192, 0, time.Millisecond, true)
	f.Observe(0, 0, 512, time.Millisecond, false)
	f.Observe(9, 0, 0, time.Millisecond, false)
	var nilF *Frontend
	nilF.Observe(1, 1, 1, time.Second, true) // no panic, no record

	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"write requests", testutil.ToFloat64(r.requests.WithLabelValues("nbd", "write")), 2},
		{"write errors", testutil.ToFloat64(r.errors.WithLabelValues("nbd", "write")), 1},
		{"write bytes in", testutil.ToFloat64(r.bytes.WithLabelValues("nbd", "write", "in")), 12288},
		{"read bytes out", testutil.ToFloat64(r.bytes.WithLabelValues("nbd", "read", "out")), 512},
		{"other requests", testutil.ToFloat64(r.requests.WithLabelValues("nbd", "other")), 1},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(r.latency); n == 0 {
		t.Errorf("no latency series")
	}
}

// TestObserveDoesNotAllocate: the request path records without allocating.
func TestObserveDoesNotAllocate(t *testing.T) {
	f := New().Frontend("native", map[uint8]string{2: "write_obj"})
	if n := testing.AllocsPerRun(1000, func() { f.Observe(2, 4096, 0, time.Millisecond, false) }); n != 0 {
		t.Fatalf("Observe allocates %v times per call", n)
	}
}

// TestServeLint scrapes the HTTP endpoint and lints the exposition.
func TestServeLint(t *testing.T) {
	r := New()
	r.Frontend("native", map[uint8]string{2: "write_obj"}).Observe(2, 10, 0, time.Millisecond, false)
	r.Gauge("epoch", "The cluster's current epoch.", func() float64 { return 7 })
	r.Counter("checksum_failures_total", "Chunks that failed their checksum.", func() float64 { return 3 })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := r.Serve(l, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer s.Close()
	rsp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, _ := io.ReadAll(rsp.Body)
	for _, want := range []string{"sheepdog_epoch 7", "sheepdog_checksum_failures_total 3",
		`sheepdog_request_bytes_total{direction="in",frontend="native",op="write_obj"} 10`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
