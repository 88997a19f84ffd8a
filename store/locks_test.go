package store

import (
	"errors"
	"testing"
)

// TestLockAfter: the read runs unlocked and once when no writer comes
// between; every writer in between costs a read, the last one locked;
// a failed read leaves the lock free.
func TestLockAfter(t *testing.T) {
	var l Locks
	const oid = 0x7c2b2500000001
	reads := 0
	if err := l.LockAfter(oid, func() error {
		reads++
		if !l.m[stripe(oid)].TryLock() {
			t.Fatal("read ran with the lock held")
		}
		l.m[stripe(oid)].Unlock() // not Unlock: no writer came
		return nil
	}); err != nil || reads != 1 {
		t.Fatalf("quiet stripe: %d reads, %v", reads, err)
	}
	if l.m[stripe(oid)].TryLock() {
		t.Fatal("LockAfter returned without the lock")
	}
	l.Unlock(oid)

	reads = 0
	locked := 0
	if err := l.LockAfter(oid, func() error {
		reads++
		if !l.m[stripe(oid)].TryLock() {
			locked++ // the last read, under the lock
			return nil
		}
		l.Unlock(oid) // a writer comes and goes
		return nil
	}); err != nil || reads != LockFreeReads+1 || locked != 1 {
		t.Fatalf("busy stripe: %d reads (%d locked), %v", reads, locked, err)
	}
	l.Unlock(oid)

	boom := errors.New("boom")
	if err := l.LockAfter(oid, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if !l.m[stripe(oid)].TryLock() {
		t.Fatal("lock held after a failed read")
	}
}
