package proto

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestResultString(t *testing.T) {
	tests := []struct {
		r    Result
		want string
	}{
		// docs/protocol.md §1.6, dog's messages.
		{ResSuccess, "Success"},
		{ResUnknown, "Unknown error"},
		{ResNoObj, "No object found"},
		{ResEIO, "I/O error"},
		{ResVdiExist, "VDI exists already"},
		{ResInvalidParms, "Invalid parameters"},
		{ResSystemError, "System error"},
		{ResVdiLocked, "VDI is already locked"},
		{ResNoVdi, "No VDI found"},
		{ResNoBaseVdi, "No base VDI found"},
		{ResVdiRead, "Failed to read from requested VDI"},
		{ResVdiWrite, "Failed to write to requested VDI"},
		{ResBaseVdiRead, "Failed to read from base VDI"},
		{ResBaseVdiWrite, "Failed to write to base VDI"},
		{ResNoTag, "Failed to find requested tag"},
		{ResStartup, "System is still booting"},
		{ResVdiNotLocked, "VDI is not locked"},
		{ResShutdown, "System is shutting down"},
		{ResNoMem, "Out of memory on server"},
		{ResFullVdi, "Maximum number of VDIs reached"},
		{ResVerMismatch, "Protocol version mismatch"},
		{ResNoSpace, "Server has no space for new objects"},
		{ResWaitForFormat, "Waiting for cluster to be formatted"},
		{ResWaitForJoin, "Waiting for other nodes to join cluster"},
		{ResJoinFailed, "Node has failed to join cluster"},
		{ResHalt, "IO has halted as there are not enough living nodes"},
		{ResReadonly, "Object is read-only"},
		{ResInodeInvalidated, "Inode object is invalidated"},
		{ResOldNodeVer, "Request has an old epoch"},
		{ResNewNodeVer, "Request has a new epoch"},
		{ResNetworkError, "Network error between sheep"},
		{ResBufferSmall, "The buffer is too small"},
		{ResForceRecover, "Cluster is running/halted and cannot be force recovered"},
		{ResNoStore, "Targeted backend store is not found"},
		{ResKilled, "Node is killed"},
		// Unknown codes, as dog prints them.
		{0x7f, "Invalid error code 7f"},
		{0x1b, "Invalid error code 1b"},
		{0x1c, "Invalid error code 1c"},
		{0x96, "Invalid error code 96"},
		{0x9a, "Invalid error code 9a"},
		{0xdeadbeef, "Invalid error code deadbeef"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("Result(%#x).String() = %q, want %q", uint32(tt.r), got, tt.want)
		}
		if got := tt.r.Error(); got != tt.want {
			t.Errorf("Result(%#x).Error() = %q, want %q", uint32(tt.r), got, tt.want)
		}
	}
}

func TestResultValues(t *testing.T) {
	// Wire values; a renumbering would break every client.
	tests := []struct {
		r    Result
		want uint32
	}{
		{ResSuccess, 0x00}, {ResNoObj, 0x02}, {ResInvalidParms, 0x05}, {ResNoVdi, 0x08}, {ResNoTag, 0x0e},
		{ResWaitForFormat, 0x16}, {ResWaitForJoin, 0x17}, {ResHalt, 0x19}, {ResReadonly, 0x1a},
		{ResInodeInvalidated, 0x1d}, {ResOldNodeVer, 0x81}, {ResNewNodeVer, 0x82}, {ResBufferSmall, 0x88},
		{ResKilled, 0x8d}, {ResCollectingCinfo, 0x95}, {ResGatewayMode, 0x97}, {ResNoCheckpointEntry, 0x99},
	}
	for _, tt := range tests {
		if uint32(tt.r) != tt.want {
			t.Errorf("%v = %#x, want %#x", tt.r, uint32(tt.r), tt.want)
		}
	}
	// Every named code has a message of its own.
	for r := Result(0); r < 0x100; r++ {
		if _, ok := resultText[r]; ok && r.String() == fmt.Sprintf("Invalid error code %x", uint32(r)) {
			t.Errorf("%#x has no message", uint32(r))
		}
	}
}

func TestResultOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Result
	}{
		{"nil", nil, ResSuccess},
		{"bare", ResNoObj, ResNoObj},
		{"wrapped", fmt.Errorf("read %#x: %w", uint64(0x80fd381500000000), ResNoObj), ResNoObj},
		{"wrapped twice", fmt.Errorf("gateway: %w", fmt.Errorf("peer 127.0.0.1:7001: %w", ResOldNodeVer)), ResOldNodeVer},
		{"joined", errors.Join(io.ErrUnexpectedEOF, fmt.Errorf("lookup: %w", ResNoVdi)), ResNoVdi},
		{"outermost wins", fmt.Errorf("%w: %w", ResNoTag, ResNoVdi), ResNoTag},
		{"unknown code passes through", fmt.Errorf("x: %w", Result(0x7f)), 0x7f},
		{"foreign error", io.EOF, ResEIO},
		{"wrapped foreign error", fmt.Errorf("store: %w", io.ErrShortWrite), ResEIO},
		{"text only", errors.New("No object found"), ResEIO},
	}
	for _, tt := range tests {
		if got := ResultOf(tt.err); got != tt.want {
			t.Errorf("%s: ResultOf(%v) = %#x, want %#x", tt.name, tt.err, uint32(got), uint32(tt.want))
		}
	}
	// Callers branch on kinds with errors.Is.
	err := fmt.Errorf("vdi %q: %w", "Alice", ResVdiLocked)
	if !errors.Is(err, ResVdiLocked) || errors.Is(err, ResVdiNotLocked) {
		t.Errorf("errors.Is on a wrapped Result misbehaves")
	}
}
