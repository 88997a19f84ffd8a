package tests

import (
	"bytes"
	"strconv"
	"testing"
)

// joinedWhileDisabled is a copies=1 cluster of two sheeps with the VDI
// "Alice" (size bytes, seeded), recovery disabled, a third sheep joined,
// and then the whole VDI rewritten through the first one: the objects the
// newcomer is now the only target of reach it by that write, not by
// recovery. It returns every sheep (the newcomer last) and the data.
func joinedWhileDisabled(t *testing.T, size int, seed byte) ([]*Sheep, []byte) {
	t.Helper()
	sheeps := startCluster(t, 2)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=1")
	seedVdi(t, sheeps[0], "Alice", size)
	sheeps[0].must(t, nil, "cluster", "recover", "disable")
	newcomer := startSheep(t, "-z", "2", "--join", sheeps[1].Addr())
	all := append(sheeps, newcomer)
	waitNodes(t, sheeps[0], 3)
	waitRunning(t, newcomer)
	data := bytes.Repeat([]byte{seed}, size)
	for i := range data {
		data[i] ^= byte(i / 8191)
	}
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	if n := objectCopies(t, []*Sheep{newcomer}, aliceObjects); len(n) == 0 {
		t.Fatal("the new node holds none of the objects: the test proves nothing")
	}
	return all, data
}

// aliceObjects is the name prefix of Alice's data objects (vid 15d167).
const aliceObjects = "0015d167"

// TestWriteBeforeRecoveryMovedObject: with one copy, a node joins and
// becomes the only target of some objects before recovery has moved them
// (recovery is disabled here to hold that state). A write to such an
// object brings it from the node that held it, then writes: the client
// never sees NO_OBJ for an object that exists.
func TestWriteBeforeRecoveryMovedObject(t *testing.T) {
	parallel(t)
	all, data := joinedWhileDisabled(t, 64<<20, 0xa7)
	for i, s := range all {
		mustRead(t, s, "Alice", data, "through node "+strconv.Itoa(i))
	}
	all[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, all, aliceObjects, 1)
	mustRead(t, all[2], "Alice", data, "after recovery")
}

// TestRestartKeepsCopiesOfTheEpoch: copies a node got in the current epoch
// (written while it was new, recovery disabled) are the only current ones;
// a whole-cluster restart replays that same epoch and must not set them
// aside as if the node had just rejoined (the settled epoch is kept on
// disk).
func TestRestartKeepsCopiesOfTheEpoch(t *testing.T) {
	parallel(t)
	all, data := joinedWhileDisabled(t, 64<<20, 0x3c) // 16 objects: with 8, the newcomer was placed none in 3 of 8 parallel runs
	for _, s := range all {
		s.Kill()
	}
	for i, s := range all {
		s.start("-z", strconv.Itoa(i))
	}
	for _, s := range all {
		waitRunning(t, s)
	}
	for i, s := range all {
		mustRead(t, s, "Alice", data, "through node "+strconv.Itoa(i)+" after a whole-cluster restart")
	}
	all[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, all, aliceObjects, 1)
	mustRead(t, all[2], "Alice", data, "after recovery")
}
