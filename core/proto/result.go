// Package proto holds Sheepdog's wire vocabulary: headers, opcodes, flags,
// result codes, object ids, the inode layout and the other fixed records.
// It is pure encode/decode with no I/O and imports nothing of ours.
//
// Every integer is little-endian at the exact offsets of the C structs
// (docs/protocol.md §1–§5).
package proto

import "fmt"

// Result is a Sheepdog result code (rsp.result). It is also our error kind:
// every layer wraps a Result with context (fmt.Errorf("...: %w", ResNoObj)),
// and the server turns the error back into the exact code with ResultOf.
//
// The values are wire values: never renumber them.
type Result uint32

// Public result codes.
const (
	ResSuccess          Result = 0x00
	ResUnknown          Result = 0x01
	ResNoObj            Result = 0x02
	ResEIO              Result = 0x03
	ResVdiExist         Result = 0x04
	ResInvalidParms     Result = 0x05
	ResSystemError      Result = 0x06
	ResVdiLocked        Result = 0x07
	ResNoVdi            Result = 0x08
	ResNoBaseVdi        Result = 0x09
	ResVdiRead          Result = 0x0A
	ResVdiWrite         Result = 0x0B
	ResBaseVdiRead      Result = 0x0C
	ResBaseVdiWrite     Result = 0x0D
	ResNoTag            Result = 0x0E
	ResStartup          Result = 0x0F
	ResVdiNotLocked     Result = 0x10
	ResShutdown         Result = 0x11
	ResNoMem            Result = 0x12
	ResFullVdi          Result = 0x13
	ResVerMismatch      Result = 0x14
	ResNoSpace          Result = 0x15
	ResWaitForFormat    Result = 0x16
	ResWaitForJoin      Result = 0x17
	ResJoinFailed       Result = 0x18
	ResHalt             Result = 0x19
	ResReadonly         Result = 0x1A
	ResInodeInvalidated Result = 0x1D
)

// Internal result codes (sheep to sheep, and a few dog sees).
const (
	ResOldNodeVer            Result = 0x81
	ResNewNodeVer            Result = 0x82
	ResNotFormatted          Result = 0x83
	ResInvalidCtime          Result = 0x84
	ResInvalidEpoch          Result = 0x85
	ResNetworkError          Result = 0x86
	ResNoCache               Result = 0x87
	ResBufferSmall           Result = 0x88
	ResForceRecover          Result = 0x89
	ResNoStore               Result = 0x8A
	ResNoSupport             Result = 0x8B
	ResNodeInRecovery        Result = 0x8C
	ResKilled                Result = 0x8D
	ResOidExist              Result = 0x8E
	ResAgain                 Result = 0x8F
	ResStaleObj              Result = 0x90
	ResClusterError          Result = 0x91
	ResVdiNotEmpty           Result = 0x92
	ResNotFound              Result = 0x93
	ResIncomplete            Result = 0x94
	ResCollectingCinfo       Result = 0x95
	ResGatewayMode           Result = 0x97
	ResInvalidVnodesStrategy Result = 0x98
	ResNoCheckpointEntry     Result = 0x99
)

var resultText = map[Result]string{
	ResSuccess:          "Success",
	ResUnknown:          "Unknown error",
	ResNoObj:            "No object found",
	ResEIO:              "I/O error",
	ResVdiExist:         "VDI exists already",
	ResInvalidParms:     "Invalid parameters",
	ResSystemError:      "System error",
	ResVdiLocked:        "VDI is already locked",
	ResNoVdi:            "No VDI found",
	ResNoBaseVdi:        "No base VDI found",
	ResVdiRead:          "Failed to read from requested VDI",
	ResVdiWrite:         "Failed to write to requested VDI",
	ResBaseVdiRead:      "Failed to read from base VDI",
	ResBaseVdiWrite:     "Failed to write to base VDI",
	ResNoTag:            "Failed to find requested tag",
	ResStartup:          "System is still booting",
	ResVdiNotLocked:     "VDI is not locked",
	ResShutdown:         "System is shutting down",
	ResNoMem:            "Out of memory on server",
	ResFullVdi:          "Maximum number of VDIs reached",
	ResVerMismatch:      "Protocol version mismatch",
	ResNoSpace:          "Server has no space for new objects",
	ResWaitForFormat:    "Waiting for cluster to be formatted",
	ResWaitForJoin:      "Waiting for other nodes to join cluster",
	ResJoinFailed:       "Node has failed to join cluster",
	ResHalt:             "IO has halted as there are not enough living nodes",
	ResReadonly:         "Object is read-only",
	ResInodeInvalidated: "Inode object is invalidated",

	ResOldNodeVer:            "Request has an old epoch",
	ResNewNodeVer:            "Request has a new epoch",
	ResNotFormatted:          "Cluster has not been formatted",
	ResInvalidCtime:          "Creation time is different",
	ResInvalidEpoch:          "Invalid epoch",
	ResNetworkError:          "Network error between sheep",
	ResNoCache:               "No cache object found",
	ResBufferSmall:           "The buffer is too small",
	ResForceRecover:          "Cluster is running/halted and cannot be force recovered",
	ResNoStore:               "Targeted backend store is not found",
	ResNoSupport:             "Operation is not supported",
	ResNodeInRecovery:        "Node is in recovery",
	ResKilled:                "Node is killed",
	ResOidExist:              "Object ID exists already",
	ResAgain:                 "Ask to try again",
	ResStaleObj:              "Object may be stale",
	ResClusterError:          "Cluster driver error",
	ResVdiNotEmpty:           "VDI is not empty",
	ResNotFound:              "Cannot find requested vdi",
	ResIncomplete:            "Data is not complete",
	ResCollectingCinfo:       "Sheep is collecting cluster information",
	ResGatewayMode:           "Sheep is running as gateway mode",
	ResInvalidVnodesStrategy: "Invalid cluster vnodes strategy",
	ResNoCheckpointEntry:     "No checkpoint entry",
}

// String is dog's message for the code.
func (r Result) String() string {
	if s, ok := resultText[r]; ok {
		return s
	}
	return fmt.Sprintf("Invalid error code %x", uint32(r))
}

// Error makes a Result usable as an error kind.
func (r Result) Error() string { return r.String() }
