package tests

import (
	"bytes"
	"strconv"
	"testing"
)

// TestWriteBeforeRecoveryMovedObject: with one copy, a node joins and
// becomes the only target of some objects before recovery has moved them
// (recovery is disabled here to hold that state). A write to such an
// object brings it from the node that held it, then writes: the client
// never sees NO_OBJ for an object that exists.
func TestWriteBeforeRecoveryMovedObject(t *testing.T) {
	sheeps := startCluster(t, 2)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=1")
	const prefix = "0015d167"
	seedVdi(t, sheeps[0], "Alice", 64<<20)
	sheeps[0].must(t, nil, "cluster", "recover", "disable")
	newcomer := startSheep(t, "-z", "2", "--join", sheeps[1].Addr())
	all := append(append([]*Sheep{}, sheeps...), newcomer)
	waitNodes(t, sheeps[0], 3)
	waitRunning(t, newcomer)

	data := bytes.Repeat([]byte{0xa7}, 64<<20)
	for i := range data {
		data[i] ^= byte(i / 8191)
	}
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	if n := objectCopies(t, []*Sheep{newcomer}, prefix); len(n) == 0 {
		t.Fatal("the new node is the target of none of the objects: the test proves nothing")
	}
	for i, s := range all {
		mustRead(t, s, "Alice", data, "through node "+strconv.Itoa(i))
	}
	sheeps[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, all, prefix, 1)
	mustRead(t, newcomer, "Alice", data, "after recovery")
}

// TestRestartKeepsCopiesOfTheEpoch: copies a node got in the current epoch
// (written while it was new, recovery disabled) are the only current ones;
// a whole-cluster restart replays that same epoch and must not set them
// aside as if the node had just rejoined (the settled epoch is kept on
// disk).
func TestRestartKeepsCopiesOfTheEpoch(t *testing.T) {
	sheeps := startCluster(t, 2)
	sheeps[0].must(t, nil, "cluster", "format", "--copies=1")
	const prefix = "0015d167"
	seedVdi(t, sheeps[0], "Alice", 32<<20)
	sheeps[0].must(t, nil, "cluster", "recover", "disable")
	newcomer := startSheep(t, "-z", "2", "--join", sheeps[1].Addr())
	all := append(append([]*Sheep{}, sheeps...), newcomer)
	waitNodes(t, sheeps[0], 3)
	waitRunning(t, newcomer)
	data := bytes.Repeat([]byte{0x3c}, 32<<20)
	for i := range data {
		data[i] ^= byte(i / 5003)
	}
	sheeps[0].must(t, data, "vdi", "write", "Alice", "0", strconv.Itoa(len(data)))
	if n := objectCopies(t, []*Sheep{newcomer}, prefix); len(n) == 0 {
		t.Fatal("the new node holds none of the objects: the test proves nothing")
	}

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
	sheeps[0].must(t, nil, "cluster", "recover", "enable")
	waitRecovered(t, all, prefix, 1)
	mustRead(t, newcomer, "Alice", data, "after recovery")
}
