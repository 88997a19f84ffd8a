// Package walmeta keeps raft-wal's metadata (its list of log segments and
// raft's stable values: current term, last vote) in two small files that
// are overwritten in place, one after the other.
//
// raft-wal's own store is a bolt database, 32 KiB on disk before it holds
// anything and growing by pages. A sheep's raft files come out of the same
// filesystem as its objects, and Sheepdog's stores run on filesystems of a
// few tens of MiB, where the space a node reports is its objects plus its
// free space: every KiB the metadata takes is a KiB of the node's size.
//
// Crash safety: the two files hold the last two committed records, each
// with a sequence number and a checksum. A commit writes the file that
// does not hold the newest record, then fsyncs it; the newest record is
// never overwritten. A write torn by a crash fails its checksum, and Load
// takes the other file's record, the one committed before it (the torn
// commit had not returned, so nothing relied on it). Writing in place
// needs no new blocks while a record fits the file's earlier size, so a
// commit still works on a full filesystem.
package walmeta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
	"golang.org/x/sys/unix"
)

// FileNames are the two files of a store, in its directory.
var FileNames = [2]string{"wal-meta.0", "wal-meta.1"}

// boltFileName is raft-wal's bolt store, which sheeps of earlier versions
// kept; Load moves its contents over and deletes it.
const boltFileName = metadb.FileName

// preallocSize is the room each file is given when it is made: a record of
// about 20 segments and raft's three stable values, written later without
// taking new blocks.
const preallocSize = 2 << 10

// raftStableKeys are the keys raft keeps in its stable store (raft.go), the
// ones copied out of a bolt store, which cannot be listed through raft-wal.
var raftStableKeys = []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}

// Store is a types.MetaStore in two files. Its methods are safe for
// concurrent use.
type Store struct {
	mu     sync.RWMutex
	files  [2]*os.File
	newest int    // index of the file holding the newest record
	seq    uint64 // sequence number of the newest record
	state  types.PersistentState
	stable map[string][]byte
}

var _ types.MetaStore = (*Store)(nil)

// Load opens the store in dir, making its files if there are none, and
// returns the segment state last committed. A bolt store of an earlier
// version in dir is copied into the new files and then deleted.
func (s *Store) Load(dir string) (types.PersistentState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files[0] != nil {
		return types.PersistentState{}, errors.New("walmeta: store already loaded")
	}
	s.stable = map[string][]byte{}
	made := false
	for i, name := range FileNames {
		f, created, err := openFile(filepath.Join(dir, name))
		if err != nil {
			s.closeFiles()
			return types.PersistentState{}, fmt.Errorf("walmeta: %w", err)
		}
		s.files[i] = f
		made = made || created
	}
	if made {
		if err := syncDir(dir); err != nil {
			s.closeFiles()
			return types.PersistentState{}, fmt.Errorf("walmeta: %w", err)
		}
	}
	found := false
	for i, f := range s.files {
		r, ok, err := readRecord(f)
		if err != nil {
			s.closeFiles()
			return types.PersistentState{}, fmt.Errorf("walmeta: %s: %w", FileNames[i], err)
		}
		if ok && (!found || r.seq > s.seq) {
			found, s.newest, s.seq, s.state, s.stable = true, i, r.seq, r.state, r.stable
		}
	}
	if !found {
		if err := s.adoptBolt(dir); err != nil {
			s.closeFiles()
			return types.PersistentState{}, fmt.Errorf("walmeta: %w", err)
		}
	}
	return cloneState(s.state), nil
}

// adoptBolt copies a bolt store left in dir by an earlier version into the
// files and deletes it; with no bolt store there is nothing to copy. The
// bolt file goes only after the copy is committed, so a crash in between
// copies it again at the next start.
func (s *Store) adoptBolt(dir string) error {
	path := filepath.Join(dir, boltFileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var b metadb.BoltMetaDB
	state, err := b.Load(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", boltFileName, err)
	}
	stable := map[string][]byte{}
	for _, k := range raftStableKeys {
		v, err := b.GetStable([]byte(k))
		if err != nil {
			b.Close()
			return fmt.Errorf("read %s: %w", boltFileName, err)
		}
		if v != nil {
			stable[k] = slices.Clone(v)
		}
	}
	if err := b.Close(); err != nil {
		return err
	}
	if err := s.commit(state, stable); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return syncDir(dir)
}

// CommitState durably replaces the segment state.
func (s *Store) CommitState(st types.PersistentState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(cloneState(st), s.stable)
}

// GetStable returns the value of key, or nil if it has none.
func (s *Store) GetStable(key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.stable[string(key)]), nil
}

// SetStable durably sets key to value.
func (s *Store) SetStable(key, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	stable := make(map[string][]byte, len(s.stable)+1)
	for k, v := range s.stable {
		stable[k] = v
	}
	stable[string(key)] = slices.Clone(value)
	return s.commit(s.state, stable)
}

// Close closes the files.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeFiles()
}

func (s *Store) closeFiles() error {
	var errs []error
	for i, f := range s.files {
		if f != nil {
			errs = append(errs, f.Close())
			s.files[i] = nil
		}
	}
	return errors.Join(errs...)
}

// commit writes state and stable as the next record into the file that
// does not hold the newest one and makes them the store's contents once
// that file is synced. On an error the store keeps its contents: the
// newest record on disk is untouched.
func (s *Store) commit(state types.PersistentState, stable map[string][]byte) error {
	if s.files[0] == nil {
		return errors.New("walmeta: store not loaded")
	}
	r := record{seq: s.seq + 1, state: state, stable: stable}
	next := 1 - s.newest
	f := s.files[next]
	if _, err := f.WriteAt(r.encode(), 0); err != nil {
		return fmt.Errorf("walmeta: write %s: %w", FileNames[next], err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("walmeta: sync %s: %w", FileNames[next], err)
	}
	s.newest, s.seq, s.state, s.stable = next, r.seq, state, stable
	return nil
}

// openFile opens path for reading and writing, making it with
// preallocSize bytes of room if it does not exist (created is then true).
func openFile(path string) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, false, err
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, false, err
	}
	// Room taken now is room a full filesystem cannot refuse later. A
	// filesystem without fallocate gets its blocks at the first write.
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, preallocSize); err != nil &&
		!errors.Is(err, syscall.EOPNOTSUPP) {
		f.Close()
		os.Remove(path)
		return nil, false, err
	}
	return f, true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func cloneState(st types.PersistentState) types.PersistentState {
	st.Segments = slices.Clone(st.Segments)
	return st
}

// record is the contents of one file:
//
//	magic    [4]byte "SWM1"
//	seq      uint64  larger in the newer record
//	length   uint32  of the body
//	checksum uint32  CRC-32C of seq, length and the body
//	body     NextSegmentID uint64, a count and the segments, a count and
//	         the stable values (key and value, each with a uint32 length)
//
// in little endian. A segment is ID, BaseIndex, MinIndex, MaxIndex, Codec,
// IndexStart, CreateTime and SealTime (Unix nanoseconds, 0 for the zero
// time) as uint64s, then SizeLimit as a uint32.
type record struct {
	seq    uint64
	state  types.PersistentState
	stable map[string][]byte
}

var magic = [4]byte{'S', 'W', 'M', '1'}

const (
	headerSize  = 4 + 8 + 4 + 4
	segmentSize = 8*8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (r record) encode() []byte {
	keys := make([]string, 0, len(r.stable))
	n := headerSize + 8 + 4 + len(r.state.Segments)*segmentSize + 4
	for k, v := range r.stable {
		keys = append(keys, k)
		n += 8 + len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, headerSize, n)
	copy(b, magic[:])
	binary.LittleEndian.PutUint64(b[4:], r.seq)
	b = binary.LittleEndian.AppendUint64(b, r.state.NextSegmentID)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.state.Segments)))
	for _, sg := range r.state.Segments {
		for _, v := range []uint64{sg.ID, sg.BaseIndex, sg.MinIndex, sg.MaxIndex, sg.Codec, sg.IndexStart,
			unixNano(sg.CreateTime), unixNano(sg.SealTime)} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		b = binary.LittleEndian.AppendUint32(b, sg.SizeLimit)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.stable[k])))
		b = append(b, r.stable[k]...)
	}
	binary.LittleEndian.PutUint32(b[12:], uint32(len(b)-headerSize))
	binary.LittleEndian.PutUint32(b[16:], crc32.Update(crc32.Checksum(b[4:16], castagnoli), castagnoli, b[headerSize:]))
	return b
}

// errCorrupt is a record that fails its checksum or does not parse.
var errCorrupt = errors.New("corrupt record")

// decodeRecord parses b, a file's contents. ok is false for a file that
// holds no record (empty, never written, or torn by a crash: its checksum
// fails); a record whose checksum holds but that does not parse is an
// error, since no crash writes that.
func decodeRecord(b []byte) (r record, ok bool, err error) {
	if len(b) < headerSize || [4]byte(b[:4]) != magic {
		return record{}, false, nil
	}
	n := binary.LittleEndian.Uint32(b[12:])
	if uint64(n) > uint64(len(b)-headerSize) {
		return record{}, false, nil
	}
	body := b[headerSize : headerSize+int(n)]
	sum := crc32.Update(crc32.Checksum(b[4:16], castagnoli), castagnoli, body)
	if sum != binary.LittleEndian.Uint32(b[16:]) {
		return record{}, false, nil
	}
	r.seq = binary.LittleEndian.Uint64(b[4:])
	d := decoder{b: body}
	r.state.NextSegmentID = d.u64()
	nseg := d.u32()
	if uint64(nseg)*segmentSize > uint64(len(d.b)) {
		return record{}, false, errCorrupt
	}
	r.state.Segments = make([]types.SegmentInfo, nseg)
	for i := range r.state.Segments {
		sg := &r.state.Segments[i]
		sg.ID, sg.BaseIndex, sg.MinIndex, sg.MaxIndex, sg.Codec, sg.IndexStart = d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64()
		sg.CreateTime, sg.SealTime = fromUnixNano(d.u64()), fromUnixNano(d.u64())
		sg.SizeLimit = d.u32()
	}
	nkv := d.u32()
	r.stable = map[string][]byte{}
	for i := uint32(0); i < nkv && d.err == nil; i++ {
		k := d.bytes()
		r.stable[string(k)] = slices.Clone(d.bytes())
	}
	if d.err != nil || len(d.b) != 0 {
		return record{}, false, errCorrupt
	}
	return r, true, nil
}

// readRecord reads f's record (see decodeRecord).
func readRecord(f *os.File) (record, bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return record{}, false, err
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return record{}, false, err
	}
	return decodeRecord(b)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) bytes() []byte { return d.take(uint64(d.u32())) }

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(v uint64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(v))
}
