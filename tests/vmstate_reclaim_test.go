package tests

import (
	"bytes"
	"testing"
	"time"
)

// TestVMStateReclaim: the vmstate objects QEMU's savevm stored for a
// snapshot (docs/qemu-client.md §8.16) live as long as the snapshot. loadvm's
// goto deletes the working VDI and keeps them; `collie vdi delete -s`
// of the snapshot removes them, while its data objects, still read by the
// working VDI that goto built on it, stay and read back.
func TestVMStateReclaim(t *testing.T) {
	parallel(t)
	s, d := qemuSheep(t)
	h := d.mustCreate("vm", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("vm")
	disk := randomBytes(8 << 20)
	img.mustWrite(0, disk)
	state := randomBytes(7 << 20) // objects 0 and a partial 1
	img.saveVMState(0, state)
	if _, res := img.snapshotCreate("vm1", uint64(len(state)), 42); res != sdResSuccess {
		t.Fatalf("snapshot: %#x", res)
	}
	img.mustWrite(0, []byte("after savevm"))
	img.mustClose()
	vmstate := []uint64{sdVmstateOid(h, 0), sdVmstateOid(h, 1)}
	for _, oid := range vmstate {
		if !hasObjectFile(s, oid) {
			t.Fatalf("vmstate object %016x not stored", oid)
		}
	}

	// loadvm: goto deletes the working VDI, not the snapshot's state.
	img = d.mustOpen("vm")
	if err := img.gotoSnapshot(0, "vm1"); err != nil {
		t.Fatal(err)
	}
	if got := img.loadVMState(0, len(state)); !bytes.Equal(got, state) {
		t.Fatal("loaded vmstate differs")
	}
	img.mustClose()
	for _, oid := range vmstate {
		if !hasObjectFile(s, oid) {
			t.Fatalf("goto removed vmstate object %016x of the snapshot", oid)
		}
	}

	s.must(t, nil, "vdi", "delete", "-s", "1", "vm")
	deadline := time.Now().Add(10 * time.Second)
	for _, oid := range vmstate {
		for hasObjectFile(s, oid) {
			if time.Now().After(deadline) {
				t.Fatalf("vmstate object %016x of the deleted snapshot still on disk after 10 s", oid)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The working VDI still reads the deleted snapshot's data objects.
	for _, idx := range []uint32{0, 1} {
		if !hasObjectFile(s, sdDataOid(h, idx)) {
			t.Errorf("data object %d of the deleted snapshot is gone, yet the working VDI reads it", idx)
		}
	}
	if got := collieReadAt(t, s, "vm", 0, len(disk)); !bytes.Equal(got, disk) {
		t.Fatal("the working VDI does not read the snapshot's data after the snapshot's deletion")
	}
}
