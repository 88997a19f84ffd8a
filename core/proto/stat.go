package proto

import "fmt"

// StatSize is the wire size of struct sd_stat: 15 little-endian u64
// request counters.
const StatSize = 15 * 8

// Stat is struct sd_stat, STAT's (0xB8) reply: one sheep's request
// counters since it started. "Gway" counts the client requests this sheep
// served as a gateway (object ops and FLUSH_VDI), "Peer" the peer ops other
// gateways sent it. Rx is the payload of requests with the WRITE flag, Tx
// the data_length of the others (what the client asked to read). The
// fields are in wire order.
type Stat struct {
	GwayActive uint64 // requests running now
	PeerActive uint64
	GwayTotal  uint64 // requests received
	PeerTotal  uint64
	GwayRx     uint64 // bytes in
	GwayTx     uint64 // bytes out
	PeerRx     uint64
	PeerTx     uint64
	GwayRemove uint64
	GwayRead   uint64
	GwayWrite  uint64
	GwayFlush  uint64
	PeerRemove uint64
	PeerRead   uint64
	PeerWrite  uint64
}

// fields lists the counters in wire order.
func (s *Stat) fields() [15]*uint64 {
	return [15]*uint64{
		&s.GwayActive, &s.PeerActive, &s.GwayTotal, &s.PeerTotal,
		&s.GwayRx, &s.GwayTx, &s.PeerRx, &s.PeerTx,
		&s.GwayRemove, &s.GwayRead, &s.GwayWrite, &s.GwayFlush,
		&s.PeerRemove, &s.PeerRead, &s.PeerWrite,
	}
}

// Marshal encodes the 120-byte record.
func (s *Stat) Marshal() []byte {
	b := make([]byte, StatSize)
	for i, f := range s.fields() {
		le.PutUint64(b[8*i:], *f)
	}
	return b
}

// Unmarshal decodes the 120-byte record.
func (s *Stat) Unmarshal(b []byte) error {
	if len(b) < StatSize {
		return fmt.Errorf("proto: sd_stat needs %d bytes, got %d", StatSize, len(b))
	}
	for i, f := range s.fields() {
		*f = le.Uint64(b[8*i:])
	}
	return nil
}

// StatExtSize is the size of StatExt on the wire.
const StatExtSize = 8

// StatExt is what our sheep appends to sd_stat in STAT's reply, for a
// request whose data_length asks for more than StatSize bytes. A reply is
// never longer than data_length, so dog, which asks for StatSize, gets
// sd_stat exactly as from Sheepdog; Sheepdog's sheep answers StatSize
// bytes to a larger request, so a client finds the extension by the
// reply's length.
type StatExt struct {
	// DegradedReads counts the reads of erasure-coded objects this sheep
	// served as a gateway by rebuilding data strips from parity strips
	// (a data strip missing or failing its checksums).
	DegradedReads uint64
}

// Marshal encodes the extension.
func (e *StatExt) Marshal() []byte {
	b := make([]byte, StatExtSize)
	le.PutUint64(b, e.DegradedReads)
	return b
}

// Unmarshal decodes the extension.
func (e *StatExt) Unmarshal(b []byte) error {
	if len(b) < StatExtSize {
		return fmt.Errorf("proto: stat extension needs %d bytes, got %d", StatExtSize, len(b))
	}
	e.DegradedReads = le.Uint64(b)
	return nil
}
