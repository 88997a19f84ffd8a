package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

var be = binary.BigEndian

// errAbort ends a session the client closed during option haggling.
var errAbort = errors.New("client aborted the negotiation")

// optionReply writes one reply to option opt.
func (c *conn) optionReply(opt, typ uint32, data []byte) error {
	b := make([]byte, optionReplyHdrLen+len(data))
	be.PutUint64(b[0:], magicOptionReply)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], typ)
	be.PutUint32(b[16:], uint32(len(data)))
	copy(b[optionReplyHdrLen:], data)
	_, err := c.nc.Write(b)
	return err
}

// optionError sends an error reply with a message for the user.
func (c *conn) optionError(opt, typ uint32, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	return c.optionReply(opt, typ, []byte(msg))
}

// handshake runs fixed-newstyle negotiation (the NBD protocol, "Fixed newstyle
// negotiation") and returns the export the client chose with
// NBD_OPT_EXPORT_NAME or NBD_OPT_GO. Any error ends the session.
func (c *conn) handshake() (*export, error) {
	var hello [handshakeLen]byte
	be.PutUint64(hello[0:], magicInit)
	be.PutUint64(hello[8:], magicOption)
	be.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return nil, err
	}
	clientFlags := be.Uint32(cf[:])
	if clientFlags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return nil, fmt.Errorf("unknown client flags %#x", clientFlags)
	}
	c.noZeroes = clientFlags&flagCNoZeroes != 0

	for {
		var h [optionHeaderLen]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		if m := be.Uint64(h[0:]); m != magicOption {
			return nil, fmt.Errorf("bad option magic %#x", m)
		}
		opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
		if n > maxOptionLen {
			if opt == optExportName || n > 16<<20 {
				return nil, fmt.Errorf("option %d with %d bytes of data", opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				return nil, err
			}
			if err := c.optionError(opt, repErrTooBig, "option data of %d bytes is too long", n); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return nil, err
		}
		e, err := c.option(opt, data)
		if e != nil || err != nil {
			return e, err
		}
	}
}

// option handles one option. It returns the export when the option
// enters the transmission phase.
func (c *conn) option(opt uint32, data []byte) (*export, error) {
	ctx := c.srv.ctx
	if opt == optStartTLS {
		return nil, c.startTLS(data)
	}
	if c.srv.cfg.TLSRequired && !c.tls && opt != optAbort {
		// The NBD protocol, "TLS support": NBD_OPT_EXPORT_NAME cannot be refused,
		// so the session ends; every other option is answered TLS_REQD.
		if opt == optExportName {
			return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME without TLS, which this server requires")
		}
		c.gate.Log().Info("nbd client without TLS refused", "peer", c.peer, "option", opt)
		return nil, c.optionError(opt, repErrTLSReqd, "this server requires TLS: use NBD_OPT_STARTTLS")
	}
	switch opt {
	case optExportName:
		name := string(data)
		e, err := c.srv.openExport(ctx, name)
		if err != nil {
			// NBD_OPT_EXPORT_NAME cannot be answered with an error: the
			// spec wants the session ended.
			return nil, err
		}
		c.exportChosen(e)
		b := make([]byte, 8+2+124)
		be.PutUint64(b[0:], uint64(e.size))
		be.PutUint16(b[8:], c.transmissionFlags(e))
		if c.noZeroes {
			b = b[:10]
		}
		if _, err := c.nc.Write(b); err != nil {
			c.srv.closeExport(e)
			return nil, err
		}
		return e, nil

	case optAbort:
		// The client may already have gone; the ACK is a courtesy.
		c.optionReply(opt, repAck, nil)
		return nil, errAbort

	case optList:
		if len(data) != 0 {
			return nil, c.optionError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		exports, err := c.srv.List(ctx)
		if err != nil {
			c.srv.log.Warn("nbd list exports", "peer", c.peer, "err", err)
			return nil, c.optionError(opt, repErrPlatform, "listing VDIs failed: %v", err)
		}
		for _, x := range exports {
			b := make([]byte, 4+len(x.Name)+len(x.Description))
			be.PutUint32(b, uint32(len(x.Name)))
			copy(b[4:], x.Name)
			copy(b[4+len(x.Name):], x.Description)
			if err := c.optionReply(opt, repServer, b); err != nil {
				return nil, err
			}
		}
		return nil, c.optionReply(opt, repAck, nil)

	case optInfo, optGo:
		name, infos, err := parseInfoRequest(data)
		if err != nil {
			return nil, c.optionError(opt, repErrInvalid, "%v", err)
		}
		e, err := c.srv.openExport(ctx, name)
		if err != nil {
			if c.srv.closed() {
				return nil, c.optionError(opt, repErrShutdown, "server is shutting down")
			}
			return nil, c.optionError(opt, repErrUnknown, "%v", err)
		}
		if err := c.sendInfo(opt, e, name, infos); err != nil {
			c.srv.closeExport(e)
			return nil, err
		}
		if err := c.optionReply(opt, repAck, nil); err != nil {
			c.srv.closeExport(e)
			return nil, err
		}
		if opt == optInfo {
			c.srv.closeExport(e)
			return nil, nil
		}
		c.exportChosen(e)
		return e, nil

	case optStructuredReply:
		if len(data) != 0 {
			return nil, c.optionError(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		return nil, c.optionReply(opt, repAck, nil)

	case optListMetaContext, optSetMetaContext:
		return nil, c.metaContext(opt, data)
	}
	return nil, c.optionError(opt, repErrUnsup, "option %d is not supported", opt)
}

// startTLS answers NBD_OPT_STARTTLS: ACK, then a TLS handshake on the
// socket, after which the negotiation goes on inside TLS.
func (c *conn) startTLS(data []byte) error {
	switch {
	case len(data) != 0:
		return c.optionError(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case c.srv.cfg.TLS == nil:
		return c.optionError(optStartTLS, repErrUnsup, "TLS is not configured on this server")
	case c.tls:
		return c.optionError(optStartTLS, repErrInvalid, "TLS is already on")
	}
	if err := c.optionReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		// The client must wait for the ACK: bytes already read were sent
		// in clear and cannot be part of the TLS stream.
		return fmt.Errorf("data sent after NBD_OPT_STARTTLS before its reply")
	}
	tc := tls.Server(c.nc, c.srv.cfg.TLS)
	if err := tc.HandshakeContext(c.srv.ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc, c.br, c.tls = tc, bufio.NewReaderSize(tc, 64<<10), true
	return nil
}

// exportChosen applies the meta context selection to the export entering
// transmission: it holds only if it was made for this very export name.
func (c *conn) exportChosen(e *export) {
	c.baseAllocation = c.baseAllocation && c.metaExport == e.name && c.structured
}

// transmissionFlags are the flags sent for e on this connection.
func (c *conn) transmissionFlags(e *export) uint16 {
	f := flagHasFlags | flagSendFlush | flagSendFUA | flagCanMultiConn
	if e.readOnly {
		f |= flagReadOnly
	} else {
		f |= flagSendTrim | flagSendWriteZeroes
	}
	if c.structured {
		f |= flagSendDF
	}
	return f
}

// sendInfo sends the NBD_REP_INFO replies of NBD_OPT_INFO / NBD_OPT_GO:
// always the export size and flags and the block sizes, the name and the
// description when asked for.
func (c *conn) sendInfo(opt uint32, e *export, name string, infos []uint16) error {
	var b [18]byte
	be.PutUint16(b[0:], infoExport)
	be.PutUint64(b[2:], uint64(e.size))
	be.PutUint16(b[10:], c.transmissionFlags(e))
	if err := c.optionReply(opt, repInfo, b[:12]); err != nil {
		return err
	}
	// Any alignment works (the volume splits at object boundaries), so
	// the minimum is 1; 4 KiB is what a block device would prefer.
	be.PutUint16(b[0:], infoBlockSize)
	be.PutUint32(b[2:], 1)
	be.PutUint32(b[6:], preferredBlock)
	be.PutUint32(b[10:], maxPayload)
	if err := c.optionReply(opt, repInfo, b[:14]); err != nil {
		return err
	}
	if slices.Contains(infos, infoName) {
		if err := c.optionReply(opt, repInfo, append([]byte{0, byte(infoName)}, name...)); err != nil {
			return err
		}
	}
	if slices.Contains(infos, infoDescription) {
		ino := e.cur.Load().vol.Inode()
		desc := describe(&ino)
		if err := c.optionReply(opt, repInfo, append([]byte{0, byte(infoDescription)}, desc...)); err != nil {
			return err
		}
	}
	return nil
}

// parseInfoRequest decodes the data of NBD_OPT_INFO / NBD_OPT_GO: a 32-bit
// name length, the name, a 16-bit count and that many 16-bit info types.
func parseInfoRequest(b []byte) (name string, infos []uint16, err error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("option data of %d bytes is too short", len(b))
	}
	n := be.Uint32(b)
	if uint64(n)+6 > uint64(len(b)) {
		return "", nil, fmt.Errorf("name length %d does not fit in %d bytes", n, len(b))
	}
	name = string(b[4 : 4+n])
	rest := b[4+n:]
	count := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return "", nil, fmt.Errorf("%d info requests in %d bytes", count, len(rest))
	}
	for i := 0; i < count; i++ {
		infos = append(infos, be.Uint16(rest[2*i:]))
	}
	return name, infos, nil
}

// parseMetaRequest decodes the data of NBD_OPT_LIST_META_CONTEXT /
// NBD_OPT_SET_META_CONTEXT: a 32-bit name length, the export name, a
// 32-bit query count and that many (32-bit length, query) pairs.
func parseMetaRequest(b []byte) (name string, queries []string, err error) {
	if len(b) < 8 {
		return "", nil, fmt.Errorf("option data of %d bytes is too short", len(b))
	}
	n := be.Uint32(b)
	if uint64(n)+8 > uint64(len(b)) {
		return "", nil, fmt.Errorf("name length %d does not fit in %d bytes", n, len(b))
	}
	name = string(b[4 : 4+n])
	rest := b[4+n:]
	count := be.Uint32(rest)
	rest = rest[4:]
	for i := uint32(0); i < count; i++ {
		if len(rest) < 4 {
			return "", nil, fmt.Errorf("query %d of %d missing", i+1, count)
		}
		q := be.Uint32(rest)
		if uint64(q)+4 > uint64(len(rest)) {
			return "", nil, fmt.Errorf("query length %d does not fit in %d bytes", q, len(rest))
		}
		queries = append(queries, string(rest[4:4+q]))
		rest = rest[4+q:]
	}
	if len(rest) != 0 {
		return "", nil, fmt.Errorf("%d bytes after the last query", len(rest))
	}
	return name, queries, nil
}

// matchContexts returns the contexts a query list selects. We know one,
// base:allocation. Listing with no query lists everything; listing with
// "base:" lists the base namespace; setting needs the exact name.
func matchContexts(queries []string, list bool) []string {
	if list && len(queries) == 0 {
		return []string{baseAllocation}
	}
	for _, q := range queries {
		if q == baseAllocation || (list && q == "base:") {
			return []string{baseAllocation}
		}
	}
	return nil
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
func (c *conn) metaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.optionError(opt, repErrInvalid, "meta contexts need NBD_OPT_STRUCTURED_REPLY first")
	}
	name, queries, err := parseMetaRequest(data)
	if err != nil {
		return c.optionError(opt, repErrInvalid, "%v", err)
	}
	if _, _, err := c.srv.resolve(c.srv.ctx, name); err != nil {
		return c.optionError(opt, repErrUnknown, "%v", err)
	}
	set := opt == optSetMetaContext
	found := matchContexts(queries, !set)
	if set {
		// SET replaces the previous selection, even with nothing.
		c.metaExport, c.baseAllocation = name, len(found) > 0
	}
	for _, ctxName := range found {
		b := make([]byte, 4+len(ctxName))
		if set {
			be.PutUint32(b, metaBaseAllocation)
		}
		copy(b[4:], ctxName)
		if err := c.optionReply(opt, repMetaContext, b); err != nil {
			return err
		}
	}
	return c.optionReply(opt, repAck, nil)
}
