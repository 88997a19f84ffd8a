package main

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// "vdi lock {list|unlock}" shows and breaks the per-VDI locks a cluster
// formatted with -l keeps (docs/protocol.md §4.9). The lock state comes from
// GET_VDI_COPIES, the names from the inodes, as in dog's vdi.c.

// lockSubcommands are dog's vdi_lock_cmd, in its order. desc is for the
// "Available subcommands:" part of "vdi lock -h" (nestedSubcommands).
var lockSubcommands = []struct {
	name, args, desc string
	needArg          bool
	run              func(s *session, args []string) error
}{
	{"list", "", "list locked VDIs", false, vdiLockList},
	{"unlock", "<vdiname>", "unlock locked VDI forcibly", true, vdiLockUnlock},
}

// vdiLock dispatches "vdi lock {list|unlock}". An unknown subcommand fails
// with the usage, as dog's do_generic_subcommand does; a missing argument
// is a usage error (CMD_NEED_ARG).
func vdiLock(s *session, args []string) error {
	for _, sub := range lockSubcommands {
		if sub.name != args[0] {
			continue
		}
		if sub.needArg && (len(args) < 2 || args[1] == "") {
			return &exitError{code: exitUsage, usage: true}
		}
		return sub.run(s, args[1:])
	}
	return &exitError{code: exitFailure, usage: true}
}

// Shared-lock participant states (vdi_state.participants_state).
const (
	sharedLockModified    = 1
	sharedLockShared      = 2
	sharedLockInvalidated = 3
)

// lockParticipant is one holder of a shared lock.
type lockParticipant struct {
	node  proto.NodeID
	state uint32
}

// vdiLockState is the lock part of one vdi_state record.
type vdiLockState struct {
	proto.VdiState
	participants []lockParticipant // LockStateShared only
}

// vdi_state layout of the shared-lock participants (§4.2); proto.VdiState
// stops at lock_owner because the server keeps only normal locks, but a
// C sheep may answer with shared ones.
const (
	vdiStateNrParticipants   = 60
	vdiStateParticipantState = 64
	vdiStateParticipants     = 188
	vdiStateNodeIDSize       = 40 // addr[16], port u16, io_addr[16], io_port u16, pad[4]
	maxLockParticipants      = 31 // SD_MAX_COPIES
)

// decodeVdiLockStates decodes the records of a GET_VDI_COPIES reply and
// sorts them by vid.
func decodeVdiLockStates(b []byte) ([]vdiLockState, error) {
	out := make([]vdiLockState, 0, len(b)/proto.VdiStateSize)
	for off := 0; off+proto.VdiStateSize <= len(b); off += proto.VdiStateSize {
		rec := b[off : off+proto.VdiStateSize]
		var v vdiLockState
		if err := v.Unmarshal(rec); err != nil {
			return nil, err
		}
		if v.LockState == proto.LockStateShared {
			n := min(binary.LittleEndian.Uint32(rec[vdiStateNrParticipants:]), maxLockParticipants)
			for i := range int(n) {
				var p lockParticipant
				p.state = binary.LittleEndian.Uint32(rec[vdiStateParticipantState+4*i:])
				id := rec[vdiStateParticipants+vdiStateNodeIDSize*i:]
				copy(p.node.Addr[:], id[0:16])
				p.node.Port = binary.LittleEndian.Uint16(id[16:])
				copy(p.node.IOAddr[:], id[18:34])
				p.node.IOPort = binary.LittleEndian.Uint16(id[34:])
				v.participants = append(v.participants, p)
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b vdiLockState) int { return cmp.Compare(a.Vid, b.Vid) })
	return out, nil
}

// vdiLockStates is dog's get_vdi_state: GET_VDI_COPIES, doubling the
// buffer (from 512 records) while the sheep answers BUFFER_SMALL.
func (s *session) vdiLockStates() ([]vdiLockState, error) {
	size := 512 * proto.VdiStateSize
	for {
		req := proto.NewRequest(proto.OpGetVdiCopies)
		buf := make([]byte, size)
		rsp, n, err := s.do(&req, nil, buf)
		if err != nil {
			return nil, err
		}
		switch rsp.Result {
		case proto.ResSuccess:
			states, err := decodeVdiLockStates(buf[:n])
			if err != nil {
				return nil, failf(exitSysfail, "Failed to get VDI state: %v", err)
			}
			return states, nil
		case proto.ResBufferSmall:
			if size >= proto.NrVdis*proto.VdiStateSize {
				return nil, failf(exitSysfail, "failed to execute SD_OP_GET_VDI_COPIES: %s\nFailed to get VDI state", rsp.Result)
			}
			size *= 2
		default:
			return nil, failf(exitSysfail, "failed to execute SD_OP_GET_VDI_COPIES: %s\nFailed to get VDI state", rsp.Result)
		}
	}
}

func findLockState(states []vdiLockState, vid uint32) *vdiLockState {
	i, ok := slices.BinarySearchFunc(states, vid, func(v vdiLockState, vid uint32) int { return cmp.Compare(v.Vid, vid) })
	if !ok {
		return nil
	}
	return &states[i]
}

// lockListHeader is dog's lock_list header.
const lockListHeader = "  Name         Id  VDI id  Tag            Owner node(s)\n"

// nodeIDText is dog's node_id_to_str: "IPv4 ip:ADDR port:PORT" (or IPv6).
func nodeIDText(id proto.NodeID) string {
	family := "IPv6"
	if id.IP().Is4() {
		family = "IPv4"
	}
	return fmt.Sprintf("%s ip:%s port:%d", family, id.IP(), id.Port)
}

// participantStateText is the "(state)" suffix dog prints after each
// participant of a shared lock.
func participantStateText(state uint32) string {
	switch state {
	case sharedLockModified:
		return "(modified)"
	case sharedLockShared:
		return "(shared)"
	case sharedLockInvalidated:
		return "(invalidated)"
	}
	return fmt.Sprintf("(UNKNOWN %d, BUG!)", state)
}

// formatLockRow is one row of "vdi lock list", or "" for an unlocked VDI.
// It follows dog's print_lock_list: "%c %-8s  %5u  %6x  %-13s " and then
// " OWNER\n" for a normal lock or " NODE(state)" per participant for a
// shared one, OWNER and NODE in node_id_to_str's form. dog has no raw form;
// ours is the same fields as vdi list -r writes them, "%c %s %d %x %s",
// then " HOST:PORT" (plus "(state)" for a shared lock) per holder, so that
// no field holds a space; an empty tag leaves two adjacent spaces, as in
// vdi list -r.
func formatLockRow(ino *proto.Inode, st *vdiLockState, raw bool) string {
	if st == nil || st.LockState == proto.LockStateUnlocked {
		return ""
	}
	flag := byte(' ')
	if raw {
		flag = '='
	}
	switch {
	case ino.IsSnapshot():
		flag = 's'
	case ino.SnapID == 1 && ino.ParentVdiID != 0:
		flag = 'c'
	}
	var snapID uint32
	if ino.IsSnapshot() {
		snapID = ino.SnapID
	}
	node := nodeIDText
	var b strings.Builder
	if raw {
		node = proto.NodeID.String
		fmt.Fprintf(&b, "%c %s %d %x %s", flag, escapeRawName(ino.Name), snapID, ino.VdiID, ino.Tag)
	} else {
		fmt.Fprintf(&b, "%c %-8s  %5d  %6x  %-13s ", flag, ino.Name, snapID, ino.VdiID, ino.Tag)
	}
	switch st.LockState {
	case proto.LockStateLocked:
		b.WriteString(" " + node(st.LockOwner))
	case proto.LockStateShared:
		for _, p := range st.participants {
			b.WriteString(" " + node(p.node) + participantStateText(p.state))
		}
	default:
		// dog prints an unknown state as shared with no participants.
	}
	b.WriteByte('\n')
	return b.String()
}

// vdiLockList is "vdi lock list [vdiname]": the locked VDIs in vid order.
// dog's lock_list takes no name and no -r; both are ours.
func vdiLockList(s *session, args []string) error {
	var only string
	if len(args) > 0 {
		only = args[0]
	}
	states, err := s.vdiLockStates()
	if err != nil {
		return err
	}
	scans, err := s.scanVdis(false, only, 0)
	if err != nil {
		return err
	}
	if !s.opts.raw {
		s.out.WriteString(lockListHeader)
	}
	unreadable := 0
	for _, r := range scans {
		if r.errMsg != "" {
			s.out.Flush()
			fmt.Fprintln(s.stderr, r.errMsg)
			unreadable++
			continue
		}
		if r.ino == nil {
			continue
		}
		s.out.WriteString(formatLockRow(r.ino, findLockState(states, r.ino.VdiID), s.opts.raw))
	}
	if unreadable > 0 {
		return &exitError{code: exitSysfail}
	}
	return nil
}

// describeVdi is dog's describe_vdi: how unlock names the VDI in messages.
func describeVdi(name string, snapID uint32, tag string, vid uint32) string {
	var what string
	switch {
	case snapID > 0:
		what = "snapid=" + strconv.FormatUint(uint64(snapID), 10)
	case tag != "":
		what = "tag=" + tag
	}
	if vid != 0 {
		if what != "" {
			what += ", "
		}
		what += fmt.Sprintf("vid=%x", vid)
	}
	if what == "" {
		return name
	}
	return name + " (" + what + ")"
}

// vdiLockUnlock is "vdi lock unlock <vdiname> [-s snapshot]": dog's
// lock_unlock. It reads the VDI's lock state and sends RELEASE_VDI with
// base_vdi_id = vid and the lock type that matches it, which breaks the
// lock whoever holds it (for a sheep left holding it after its QEMU died).
func vdiLockUnlock(s *session, args []string) error {
	name, snapID, tag := args[0], s.opts.snapID, s.opts.snapTag
	vid, res, err := s.findVdi(name, snapID, tag)
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return failf(exitFailure, "Failed to find VDI %s: %s", describeVdi(name, snapID, tag, 0), res)
	}
	desc := describeVdi(name, snapID, tag, vid)
	states, err := s.vdiLockStates()
	if err != nil {
		return err
	}
	st := findLockState(states, vid)
	if st == nil {
		return failf(exitSysfail, "Failed to find VDI state %s", desc)
	}
	var lockType uint32
	switch st.LockState {
	case proto.LockStateUnlocked:
		return failf(exitFailure, "VDI %s is not locked", desc)
	case proto.LockStateLocked:
		lockType = 0 // LOCK_TYPE_NORMAL
	case proto.LockStateShared:
		lockType = 1 // LOCK_TYPE_SHARED
	default:
		return failf(exitSysfail, "VDI %s unknown lock state (%d)", desc, st.LockState)
	}
	req := proto.NewRequest(proto.OpReleaseVdi)
	req.SetVdi(proto.VdiArgs{BaseVdiID: vid, Type: lockType})
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	// dog ignores the result; a refusal is worth saying.
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Failed to unlock VDI %s: %s", desc, rsp.Result)
	}
	return nil
}
