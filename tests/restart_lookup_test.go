package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/fanout"
)

// createVdis creates VDIs name0 .. name(n-1) of 4 MiB through s, 32 at a
// time on one pipelined connection (collie would take a process each).
func createVdis(t *testing.T, s *Sheep, name string, n int) {
	t.Helper()
	ctx := context.Background()
	c, err := client.Dial(ctx, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = fanout.Run(n, 32, func(i int) error {
		req := proto.NewRequest(proto.OpNewVdi)
		req.SetVdi(proto.VdiArgs{VdiSize: 4 << 20, Copies: 1})
		if _, _, err := c.Call(ctx, &req, proto.VdiName(fmt.Sprintf("%s%d", name, i), "", false), nil); err != nil {
			return fmt.Errorf("create %s%d: %w", name, i, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lookupUntilFound asks s for VDI name (GET_VDI_INFO, as QEMU's open and
// collie do) from the moment it answers until it has found it 50 times
// in a row, and fails on any NO_VDI: a sheep that is still replaying its
// cluster log must wait or answer a retryable result, never say that an
// existing VDI does not exist. It returns the results seen, by name.
func lookupUntilFound(t *testing.T, s *Sheep, name string, within time.Duration) map[string]int {
	t.Helper()
	ctx := context.Background()
	seen := map[string]int{}
	found := 0
	deadline := time.Now().Add(within)
	var c *client.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for found < 50 {
		if time.Now().After(deadline) {
			t.Errorf("%s not found 50 times in a row within %v: results %v", name, within, seen)
			return seen
		}
		if c == nil {
			var err error
			if c, err = client.Dial(ctx, s.Addr()); err != nil {
				seen["dial error"]++
				time.Sleep(5 * time.Millisecond)
				continue
			}
		}
		req := proto.NewRequest(proto.OpGetVdiInfo)
		rsp, _, err := c.Do(ctx, &req, proto.VdiName(name, "", true), nil)
		if err != nil {
			seen["connection error"]++
			c.Close()
			c = nil
			continue
		}
		seen[rsp.Result.String()]++
		switch rsp.Result {
		case proto.ResSuccess:
			found++
		case proto.ResNoVdi:
			t.Errorf("%s: NO_VDI from %s after its restart (results so far %v)", name, s.Addr(), seen)
			return seen
		default:
			found = 0
			time.Sleep(2 * time.Millisecond)
		}
	}
	return seen
}

// A sheep restarted right after VDIs were created answers lookups of them
// only from a state that holds them: while it replays its cluster log it
// waits or answers WAIT_FOR_JOIN, never NO_VDI. Its state comes from the
// snapshot of a clean stop, and the VDIs created since are in its log
// only; after the restart it is its own leader. (Before the fix the first
// lookup of each round answered NO_VDI.)
func TestRestartedNodeNeverAnswersNoVdi(t *testing.T) {
	parallel(t)
	t.Run("one node", func(t *testing.T) {
		s := startSheep(t, "-n")
		s.must(t, nil, "cluster", "format", "--copies=1")
		createVdis(t, s, "v", 500)
		// A clean stop snapshots the state; the next VDIs are in the log
		// only when the sheep is killed.
		s.Stop()
		s.start("-n")
		createVdis(t, s, "x", 1000)
		for round := range 3 {
			s.Kill()
			s.start("-n")
			seen := lookupsUntilFound(t, s, "x", 1000, 60*time.Second)
			t.Logf("round %d: %v", round, seen)
		}
	})
}

// lookupsUntilFound runs lookupUntilFound for 8 of the n VDIs at once.
func lookupsUntilFound(t *testing.T, s *Sheep, name string, n int, within time.Duration) map[string]int {
	t.Helper()
	var mu sync.Mutex
	all := map[string]int{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := lookupUntilFound(t, s, fmt.Sprintf("%s%d", name, n-1-i*(n/8)), within)
			mu.Lock()
			for k, v := range seen {
				all[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}
