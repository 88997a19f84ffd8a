package main

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// TestFormatLockRow pins the rows of "vdi lock list" to dog's
// print_lock_list, including the shared (tgt multipath) form our sheep
// never produces but a C sheep can, decoded from a raw vdi_state record.
func TestFormatLockRow(t *testing.T) {
	n1 := proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7000"))
	n2 := proto.NodeIDFromAddrPort(netip.MustParseAddrPort("[::1]:7001"))

	shared := make([]byte, proto.VdiStateSize)
	(&proto.VdiState{Vid: 0x7c2b25, LockState: proto.LockStateShared}).Marshal(shared)
	binary.LittleEndian.PutUint32(shared[vdiStateNrParticipants:], 2)
	binary.LittleEndian.PutUint32(shared[vdiStateParticipantState:], sharedLockModified)
	binary.LittleEndian.PutUint32(shared[vdiStateParticipantState+4:], sharedLockInvalidated)
	for i, n := range []proto.NodeID{n1, n2} {
		b := shared[vdiStateParticipants+vdiStateNodeIDSize*i:]
		copy(b, n.Addr[:])
		binary.LittleEndian.PutUint16(b[16:], n.Port)
	}
	locked := make([]byte, proto.VdiStateSize)
	(&proto.VdiState{Vid: 0x15d167, LockState: proto.LockStateLocked, LockOwner: n1}).Marshal(locked)
	unlocked := make([]byte, proto.VdiStateSize)
	(&proto.VdiState{Vid: 0x1, LockState: proto.LockStateUnlocked}).Marshal(unlocked)
	states, err := decodeVdiLockStates(append(append(shared, locked...), unlocked...))
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 3 || states[0].Vid != 1 || states[1].Vid != 0x15d167 || states[2].Vid != 0x7c2b25 {
		t.Fatalf("decoded %+v, want 3 states sorted by vid", states)
	}

	work := &proto.Inode{Name: "alpha", VdiID: 0x15d167}
	snap := &proto.Inode{Name: "my vm", Tag: "t1", VdiID: 0x7c2b25, SnapID: 3, SnapCtime: 1}
	for _, c := range []struct {
		ino  *proto.Inode
		vid  uint32
		raw  bool
		want string
	}{
		{work, 0x15d167, false, "  alpha         0  15d167                 IPv4 ip:127.0.0.1 port:7000\n"},
		{work, 0x15d167, true, "= alpha 0 15d167  127.0.0.1:7000\n"},
		{snap, 0x7c2b25, false, "s my vm         3  7c2b25  t1            " +
			" IPv4 ip:127.0.0.1 port:7000(modified) IPv6 ip:::1 port:7001(invalidated)\n"},
		{snap, 0x7c2b25, true, "s my\\ vm 3 7c2b25 t1 127.0.0.1:7000(modified) ::1:7001(invalidated)\n"},
		{work, 0x1, false, ""},
		{work, 0x2, false, ""}, // no state at all
	} {
		if got := formatLockRow(c.ino, findLockState(states, c.vid), c.raw); got != c.want {
			t.Errorf("vid %x raw %v:\n got %q\nwant %q", c.vid, c.raw, got, c.want)
		}
	}
}

func TestDescribeVdi(t *testing.T) {
	for _, c := range []struct {
		name   string
		snapID uint32
		tag    string
		vid    uint32
		want   string
	}{
		{"a", 0, "", 0, "a"},
		{"a", 0, "", 0xab, "a (vid=ab)"},
		{"a", 2, "", 0xab, "a (snapid=2, vid=ab)"},
		{"a", 0, "t", 0xab, "a (tag=t, vid=ab)"},
		{"a", 2, "", 0, "a (snapid=2)"},
		{"a", 0, "t", 0, "a (tag=t)"},
	} {
		if got := describeVdi(c.name, c.snapID, c.tag, c.vid); got != c.want {
			t.Errorf("describeVdi(%q, %d, %q, %x) = %q, want %q", c.name, c.snapID, c.tag, c.vid, got, c.want)
		}
	}
}
