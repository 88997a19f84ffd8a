package tests

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Ledger objects (Sheepdog's generational reference counting, conformance
// test 104): the first copy-on-write away from a shared object creates its
// ledger (08 + data oid) on the object's replicas, and the object goes
// with its last reference, whatever the order of the deletes.
func TestLedgerObjects(t *testing.T) {
	parallel(t)
	sheeps := startCluster(t, 3)
	s := sheeps[0]
	s.must(t, nil, "cluster", "format", "-c", "2")
	s.must(t, nil, "vdi", "create", "test", "16M")
	s.must(t, randomBytes(512), "vdi", "write", "test", "0", "512")
	s.must(t, randomBytes(512), "vdi", "write", "test", strconv.Itoa(4<<20), "512")
	s.must(t, nil, "vdi", "snapshot", "test")
	snap := proto.VdiNameHash("test")
	a, b := proto.VidToDataOid(snap, 0), proto.VidToDataOid(snap, 1)
	if n := len(storeObjects(sheeps, fmt.Sprintf("%016x", proto.LedgerOid(a)))); n != 0 {
		t.Fatalf("%d ledger copies before any reference was dropped", n)
	}
	s.must(t, randomBytes(512), "vdi", "write", "test", "0", "512") // copy-on-write of a
	s.must(t, nil, "vdi", "clone", "-s", "1", "test", "test2")
	s.must(t, randomBytes(512), "vdi", "write", "test2", "0", "512") // and again
	// a: named by the snapshot, dropped by two copies: ledger [1, -2].
	// b: named by all three, dropped by none: no ledger.
	waitLedger(t, sheeps, a, []int32{1, -2})
	waitLedger(t, sheeps, b, nil)
	wantCopies(t, sheeps, a, 2)

	// The snapshot goes: a loses its last reference; b keeps two.
	s.must(t, nil, "vdi", "delete", "-s", "1", "test")
	wantCopies(t, sheeps, a, 0)
	waitLedger(t, sheeps, a, nil)
	waitLedger(t, sheeps, b, []int32{0, 2})
	wantCopies(t, sheeps, b, 2)

	s.must(t, nil, "vdi", "delete", "test")
	waitLedger(t, sheeps, b, []int32{0, 1})
	wantCopies(t, sheeps, b, 2)

	// The clone, b's last reader: b and its ledger go.
	s.must(t, nil, "vdi", "delete", "test2")
	wantCopies(t, sheeps, b, 0)
	waitLedger(t, sheeps, b, nil)
}

// wantCopies waits until oid has n copies in the stores of sheeps.
func wantCopies(t *testing.T, sheeps []*Sheep, oid uint64, n int) {
	t.Helper()
	name := fmt.Sprintf("%016x", oid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		for _, f := range storeObjects(sheeps, name) {
			if len(f) >= 16 && f[len(f)-16:] == name {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d copies, want %d", name, got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLedger waits until every copy of the ledger of data object oid
// holds counters want (nil: no copy is left), and for want, that there
// are two copies.
func waitLedger(t *testing.T, sheeps []*Sheep, oid uint64, want []int32) {
	t.Helper()
	name := fmt.Sprintf("%016x", proto.LedgerOid(oid))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var files []string
		for _, f := range storeObjects(sheeps, name) {
			if len(f) >= 16 && f[len(f)-16:] == name {
				files = append(files, f)
			}
		}
		ok := len(files) == 0
		var got []int32
		if want != nil {
			ok = len(files) == 2
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil || len(b) != proto.LedgerSize {
					ok = false
					continue
				}
				got = got[:0]
				for i := range want {
					got = append(got, int32(binary.LittleEndian.Uint32(b[4*i:])))
				}
				for i := range want {
					ok = ok && got[i] == want[i]
				}
				for _, c := range b[4*len(want):] {
					ok = ok && c == 0
				}
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger %s: %d copies, counters %v, want %v", name, len(files), got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLedgerNBDCopyOnWrite: a copy-on-write through the NBD front-end
// drops its reference like QEMU's and dog's table writes: once the
// snapshot and the VDI are deleted, no data object or ledger is left.
func TestLedgerNBDCopyOnWrite(t *testing.T) {
	parallel(t)
	needTools(t, "qemu-io")
	s, addr := nbdSheep(t)
	s.must(t, nil, "vdi", "create", "Alice", "8M")
	qemuIO(t, nbdURI(addr, "Alice"), "write -P 0x01 0 8M")
	s.must(t, nil, "vdi", "snapshot", "Alice")
	qemuIO(t, nbdURI(addr, "Alice"), "write -P 0x02 4M 4k") // copy-on-write of object 1
	snap := proto.VdiNameHash("Alice")
	sheeps := []*Sheep{s}
	waitLedger1(t, s, proto.VidToDataOid(snap, 1), true)
	s.must(t, nil, "vdi", "delete", "-s", "1", "Alice")
	s.must(t, nil, "vdi", "delete", "Alice")
	waitObjects(t, sheeps, snap, 0)
	waitObjects(t, sheeps, snap+1, 0)
	waitLedger1(t, s, proto.VidToDataOid(snap, 1), false)
}

// waitLedger1 waits until the one copy of the ledger of oid on s exists
// (or not).
func waitLedger1(t *testing.T, s *Sheep, oid uint64, exists bool) {
	t.Helper()
	name := fmt.Sprintf("%016x", proto.LedgerOid(oid))
	deadline := time.Now().Add(10 * time.Second)
	for (len(storeObjects([]*Sheep{s}, name)) > 0) != exists {
		if time.Now().After(deadline) {
			t.Fatalf("ledger %s exists: %v, want %v", name, !exists, exists)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
