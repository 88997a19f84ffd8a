package proto

import "fmt"

// OpGetStaleList asks a sheep for the copies in its stale area (internal,
// proto 0x0a; ours): each copy set aside with the last epoch in which it
// was current. Recovery asks every member for it when no member holds a
// live copy of an object, and takes the newest epoch's copy, read with
// READ_PEER at that epoch (obj.tgt_epoch), as Sheepdog reads its
// "oid.epoch" stale files. The reply is StaleEntrySize bytes per copy
// (BUFFER_SMALL when they do not fit).
const OpGetStaleList Opcode = 0xFB

// StaleEntrySize is the size of one OpGetStaleList entry: the object's key
// (u64; a strip's key for a strip), the epoch (u32), 4 zero bytes.
const StaleEntrySize = 16

// StaleEntry is one copy in a stale area: the copy of Key that was
// current up to and including Epoch.
type StaleEntry struct {
	Key   uint64
	Epoch uint32
}

// AppendStaleEntry appends e in its wire form.
func AppendStaleEntry(b []byte, e StaleEntry) []byte {
	b = le.AppendUint64(b, e.Key)
	b = le.AppendUint32(b, e.Epoch)
	return le.AppendUint32(b, 0)
}

// ParseStaleList decodes an OpGetStaleList reply.
func ParseStaleList(b []byte) ([]StaleEntry, error) {
	if len(b)%StaleEntrySize != 0 {
		return nil, fmt.Errorf("stale list of %d bytes, not a multiple of %d: %w", len(b), StaleEntrySize, ResInvalidParms)
	}
	out := make([]StaleEntry, len(b)/StaleEntrySize)
	for i := range out {
		e := b[i*StaleEntrySize:]
		out[i] = StaleEntry{Key: le.Uint64(e), Epoch: le.Uint32(e[8:])}
	}
	return out, nil
}
