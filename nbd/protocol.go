package nbd

import (
	"context"
	"errors"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Wire values of the NBD protocol, from
// https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md.
// Every integer on the wire is big-endian. The names follow the spec's
// (NBD_OPT_GO is optGo, NBD_CMD_FLAG_FUA is cmdFlagFUA, ...).
//
// github.com/pojntfx/go-nbd's pkg/protocol holds a subset of these (no
// FLUSH, TRIM, WRITE_ZEROES, structured replies or meta contexts), so we
// keep the full table here rather than import a second naming scheme for
// a third of it.

// Magic numbers.
const (
	magicInit         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption       uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptionReply  uint64 = 0x3e889045565a9
	magicRequest      uint32 = 0x25609513
	magicSimpleReply  uint32 = 0x67446698
	magicStructReply  uint32 = 0x668e33ef
	magicRequestExt   uint32 = 0x21e41c71 // extended headers; we never negotiate them
	handshakeLen             = 8 + 8 + 2  // server's opening: two magics and the handshake flags
	optionHeaderLen          = 8 + 4 + 4
	optionReplyHdrLen        = 8 + 4 + 4 + 4
	requestLen               = 4 + 2 + 2 + 8 + 8 + 4
	simpleReplyLen           = 4 + 4 + 8
	structReplyLen           = 4 + 2 + 2 + 8 + 4
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  uint16 = 1 << 0
	flagNoZeroes       uint16 = 1 << 1
	flagCFixedNewstyle uint32 = 1 << 0
	flagCNoZeroes      uint32 = 1 << 1
)

// Transmission flags, sent per export.
const (
	flagHasFlags        uint16 = 1 << 0
	flagReadOnly        uint16 = 1 << 1
	flagSendFlush       uint16 = 1 << 2
	flagSendFUA         uint16 = 1 << 3
	flagRotational      uint16 = 1 << 4
	flagSendTrim        uint16 = 1 << 5
	flagSendWriteZeroes uint16 = 1 << 6
	flagSendDF          uint16 = 1 << 7
	flagCanMultiConn    uint16 = 1 << 8
	flagSendResize      uint16 = 1 << 9
	flagSendCache       uint16 = 1 << 10
	flagSendFastZero    uint16 = 1 << 11
)

// Options (client requests during the handshake).
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
	optExtendedHeaders uint32 = 11
)

// Option reply types. Errors have bit 31 set.
const (
	repAck             uint32 = 1
	repServer          uint32 = 2
	repInfo            uint32 = 3
	repMetaContext     uint32 = 4
	repFlagError       uint32 = 1 << 31
	repErrUnsup               = repFlagError | 1
	repErrPolicy              = repFlagError | 2
	repErrInvalid             = repFlagError | 3
	repErrPlatform            = repFlagError | 4
	repErrTLSReqd             = repFlagError | 5
	repErrUnknown             = repFlagError | 6
	repErrShutdown            = repFlagError | 7
	repErrBlockSizeReq        = repFlagError | 8
	repErrTooBig              = repFlagError | 9
)

// Info types of NBD_OPT_INFO / NBD_OPT_GO.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Commands.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7
	cmdResize      uint16 = 8
)

// Command flags.
const (
	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagReqOne   uint16 = 1 << 3
	cmdFlagFastZero uint16 = 1 << 4
)

// Structured reply flags and chunk types.
const (
	replyFlagDone        uint16 = 1 << 0
	replyTypeNone        uint16 = 0
	replyTypeOffsetData  uint16 = 1
	replyTypeOffsetHole  uint16 = 2
	replyTypeBlockStatus uint16 = 5
	replyTypeError       uint16 = 1<<15 | 1
	replyTypeErrorOffset uint16 = 1<<15 | 2
)

// base:allocation status flags.
const (
	stateHole uint32 = 1 << 0
	stateZero uint32 = 1 << 1
)

// Error values of the transmission phase. They are errno numbers as on
// Linux, but the spec fixes them, whatever the server's platform.
const (
	errPerm     uint32 = 1
	errIO       uint32 = 5
	errNoMem    uint32 = 12
	errInval    uint32 = 22
	errNoSpc    uint32 = 28
	errOverflow uint32 = 75
	errNotSup   uint32 = 95
	errShutdown uint32 = 108
)

// Limits.
const (
	// maxPayload is the largest READ or WRITE we accept, and what we
	// advertise as the maximum block size. A WRITE declaring more cannot
	// be skipped safely, so it ends the connection.
	maxPayload = 32 << 20
	// preferredBlock is the advertised preferred block size.
	preferredBlock = 4096
	// maxOptionLen bounds the data of one option; export names and meta
	// context queries are at most 4096 bytes each.
	maxOptionLen = 64 << 10
	// maxString is the spec's limit for names and messages.
	maxString = 4096
	// metaBaseAllocation is the context id we give base:allocation.
	metaBaseAllocation uint32 = 1
)

const baseAllocation = "base:allocation"

// errnoOf maps an error of the volume layer to the NBD error value: the
// Sheepdog result it wraps decides, anything else is EIO.
func errnoOf(err error) uint32 {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errShutdown
	}
	switch proto.ResultOf(err) {
	case proto.ResReadonly:
		return errPerm
	case proto.ResInvalidParms:
		return errInval
	case proto.ResNoSpace:
		return errNoSpc
	case proto.ResNoMem:
		return errNoMem
	case proto.ResShutdown:
		return errShutdown
	}
	return errIO
}
