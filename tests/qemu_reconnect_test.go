package tests

// QEMU's reconnect (docs/qemu-client.md §9): when the I/O connection drops, it
// dials again (once a second; faster here) and resends every request in
// flight with its original id, data writes re-examined against its index,
// so a CREATE_AND_WRITE_OBJ the sheep already applied arrives again as a
// create. The sheep must answer SUCCESS, and the bytes must be right.

import (
	"bytes"
	"testing"
	"time"
)

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no reply from the sheep", what)
	}
}

// TestQemuReconnect: a reply lost with the connection cut (the captured
// qemu52-wire-reconnect.log scenario), then a sheep killed and restarted
// under two requests in flight whose replies were lost.
func TestQemuReconnect(t *testing.T) {
	s, d := qemuSheep(t)
	h := d.mustCreate("rc1", qemuCreateOpts{size: 64 << 20})
	img := d.mustOpen("rc1")

	// The reply to the first CREATE is dropped and the connection cut:
	// QEMU resends the CREATE with id 0, then the index update is id 1.
	first := bytes.Repeat([]byte{0x5a}, 8192)
	c := img.dataWrite(0, 0, first)
	dropped := img.io.cutAfterReply(img.io.peekNextID())
	img.io.submit(c)
	waitSignal(t, dropped, "first CREATE")
	if err := img.wait(c); err != nil {
		t.Fatalf("resent CREATE of an object the sheep already created: %v", err)
	}
	if c.hdr.id != 0 || !c.create || c.hdr.opcode != sdOpCreateAndWrite {
		t.Fatalf("resent as %s, want the CREATE with id 0", c)
	}
	img.index[0] = h
	if err := img.updateIndex(0, 0); err != nil {
		t.Fatal(err)
	}
	if order := img.io.replyOrder(); len(order) != 2 || order[0] != 0 || order[1] != 1 {
		t.Fatalf("reply ids %v, want [0 1]", order)
	}
	second := bytes.Repeat([]byte{0x5b}, 8192)
	img.mustWrite(4<<20, second) // ids go on from 2
	if got := img.mustRead(0, 8192); !bytes.Equal(got, first) {
		t.Fatal("object 0 differs after the resend")
	}

	// Kill the sheep with two requests in flight whose replies were lost:
	// a CREATE of object 2 (applied) and a WRITE_OBJ into object 0.
	third := bytes.Repeat([]byte{0x5c}, 1<<20)
	patch := bytes.Repeat([]byte{0x5d}, 4096)
	cr := img.dataWrite(2, 0, third)
	wr := img.dataWrite(0, 4096, patch)
	if !cr.create || wr.create {
		t.Fatal("requests not built as CREATE + WRITE_OBJ")
	}
	next := img.io.peekNextID()
	lostC, lostW := img.io.swallowReply(next), img.io.swallowReply(next+1)
	img.io.submit(cr, wr)
	waitSignal(t, lostC, "CREATE before the restart")
	waitSignal(t, lostW, "WRITE_OBJ before the restart")
	s.Kill()
	// QEMU dials again as soon as the port accepts and resends at once;
	// the harness restarts the sheep on the same dir and port meanwhile.
	s.start()
	for _, r := range []*aioReq{cr, wr} {
		if err := img.wait(r); err != nil {
			t.Fatalf("%s resent after the restart: %v", r, err)
		}
	}
	if cr.hdr.id != next || wr.hdr.id != next+1 || cr.hdr.opcode != sdOpCreateAndWrite || wr.hdr.opcode != sdOpWriteObj {
		t.Fatalf("resent %s and %s, want ids %d, %d as CREATE and WRITE_OBJ", cr, wr, next, next+1)
	}
	img.index[2] = h
	if err := img.updateIndex(2, 2); err != nil {
		t.Fatal(err)
	}
	img.mustWrite(12<<20, []byte("after the restart"))
	img.mustClose()

	want := make([]byte, 12<<20+17)
	copy(want, first)
	copy(want[4096:], patch)
	copy(want[4<<20:], second)
	copy(want[8<<20:], third)
	copy(want[12<<20:], "after the restart")
	if got := collieReadAt(t, s, "rc1", 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("collie reads other bytes after the reconnects")
	}
}
