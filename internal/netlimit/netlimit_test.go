package netlimit

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := NewBudget(100)
	ctx := context.Background()
	if n, err := b.Acquire(ctx, 60); n != 60 || err != nil {
		t.Fatalf("Acquire(60) = %d, %v", n, err)
	}
	got := make(chan int64)
	go func() {
		n, _ := b.Acquire(ctx, 1000) // clamped to the whole budget
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("Acquire past the budget returned %d at once", n)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(60)
	if n := <-got; n != 100 {
		t.Fatalf("clamped Acquire took %d, want 100", n)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := b.Acquire(cctx, 1); err == nil {
		t.Fatal("Acquire on a full budget did not end with its context")
	}
	b.Release(100)
	if b.Used() != 0 {
		t.Fatalf("used %d after releasing everything", b.Used())
	}
	var nilB *Budget
	if n, err := nilB.Acquire(ctx, 5); n != 0 || err != nil {
		t.Fatal("a nil budget takes nothing")
	}
}

// TryAcquire takes what fits at once and nothing otherwise.
func TestBudgetTryAcquire(t *testing.T) {
	b := NewBudget(100)
	if n, ok := b.TryAcquire(70); n != 70 || !ok {
		t.Fatalf("TryAcquire(70) = %d, %v", n, ok)
	}
	if n, ok := b.TryAcquire(40); n != 0 || ok || b.Used() != 70 {
		t.Fatalf("TryAcquire(40) past the budget = %d, %v, used %d", n, ok, b.Used())
	}
	b.Release(70)
	if n, ok := b.TryAcquire(1000); n != 100 || !ok {
		t.Fatalf("TryAcquire(1000) on a free budget = %d, %v, want it clamped to 100", n, ok)
	}
	var nilB *Budget
	if n, ok := nilB.TryAcquire(5); n != 0 || !ok {
		t.Fatal("a nil budget takes nothing and never refuses")
	}
}

func TestSampler(t *testing.T) {
	var buf bytes.Buffer
	s := NewSampler(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	for i := 0; i < 100; i++ {
		s.Warn("bad client", "i", i)
	}
	s.Warn("other")
	if n := strings.Count(buf.String(), "bad client"); n != 1 {
		t.Fatalf("%d lines for 100 sampled ones", n)
	}
	if !strings.Contains(buf.String(), "other") {
		t.Fatal("another message was suppressed")
	}
	s.kinds["bad client"].next = time.Time{}
	s.Warn("bad client")
	if !strings.Contains(buf.String(), "suppressed=99") {
		t.Fatalf("suppressed count missing:\n%s", buf.String())
	}
}

// A gate closes connections over its cap and keeps accepting after Done.
func TestGateCap(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g := NewGate("test", Config{MaxConns: 1})
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := g.Accept(l)
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c1, _ := net.Dial("tcp", l.Addr().String())
	defer c1.Close()
	<-accepted
	c2, _ := net.Dial("tcp", l.Addr().String())
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("connection over the cap: %v, want EOF", err)
	}
	g.Done()
	c3, _ := net.Dial("tcp", l.Addr().String())
	defer c3.Close()
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatal("no connection accepted after Done")
	}
}
