package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Crash tests of the NBD write-back path (docs/design.md §7 "Durability"): a
// write without FUA is stable after the next FLUSH, and whatever a crash
// does to writes not flushed yet, no range ever reads as an error. A
// sheep killed with SIGKILL loses what it kept in memory only (the
// checksums of write-back writes, the volume's unstable allocations) but
// not the page cache, so these tests check exactly that memory: that a
// FLUSH stored everything it covers, and that what was not stored is
// settled, not failed, when the sheep comes back.

// crashBlock is the unit the crash tests write and check: every 4 KiB
// block carries its own index and a generation, so a read tells which
// write it came from.
const crashBlock = 4096

// blockData is block k of generation gen (gen 0 is the zeros of a hole).
func blockData(k int, gen uint32) []byte {
	b := make([]byte, crashBlock)
	if gen == 0 {
		return b
	}
	for i := 0; i < crashBlock; i += 16 {
		binary.LittleEndian.PutUint64(b[i:], uint64(k))
		binary.LittleEndian.PutUint32(b[i+8:], gen)
		binary.LittleEndian.PutUint32(b[i+12:], ^gen)
	}
	return b
}

// genOf returns the generation block k holds, or false when it holds
// bytes of no generation (a torn or corrupt block).
func genOf(k int, b []byte) (uint32, bool) {
	gen := binary.LittleEndian.Uint32(b[8:])
	if bytes.Equal(b, blockData(k, gen)) {
		return gen, true
	}
	return 0, false
}

// nbdConn is a pipelined NBD client for the crash tests: any number of
// requests in flight, replies matched by handle. Errors are returned,
// never fatal, as the sheep under it is killed on purpose.
type nbdConn struct {
	c       net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]nbdPending
	err     error
}

// nbdPending is a request waiting for its reply: readLen is the payload
// length a read expects (0 for other requests).
type nbdPending struct {
	ch      chan nbdReply
	readLen int
}

type nbdReply struct {
	errno uint32
	data  []byte
	err   error
}

// dialNBDConn negotiates export over addr like dialNBD, then reads
// replies in the background.
func dialNBDConn(t testing.TB, addr, export string) *nbdConn {
	t.Helper()
	raw := dialNBD(t, addr, export)
	raw.c.SetDeadline(time.Time{})
	n := &nbdConn{c: raw.c, waiting: map[uint64]nbdPending{}}
	go n.readLoop()
	return n
}

func (n *nbdConn) readLoop() {
	be := binary.BigEndian
	h := make([]byte, 16)
	for {
		if _, err := io.ReadFull(n.c, h); err != nil {
			n.fail(err)
			return
		}
		handle := be.Uint64(h[8:])
		n.mu.Lock()
		p, ok := n.waiting[handle]
		delete(n.waiting, handle)
		n.mu.Unlock()
		r := nbdReply{errno: be.Uint32(h[4:])}
		if !ok || be.Uint32(h) != 0x67446698 {
			n.fail(fmt.Errorf("bad reply %x", h))
			return
		}
		if r.errno == 0 && p.readLen > 0 {
			r.data = make([]byte, p.readLen)
			if _, err := io.ReadFull(n.c, r.data); err != nil {
				n.fail(err)
				return
			}
		}
		p.ch <- r
	}
}

func (n *nbdConn) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err == nil {
		n.err = err
	}
	for h, p := range n.waiting {
		p.ch <- nbdReply{err: err}
		delete(n.waiting, h)
	}
}

// do sends one request and waits for its reply. readLen > 0 for reads.
func (n *nbdConn) do(typ, flags uint16, off uint64, length uint32, data []byte, readLen int) nbdReply {
	be := binary.BigEndian
	n.mu.Lock()
	if n.err != nil {
		err := n.err
		n.mu.Unlock()
		return nbdReply{err: err}
	}
	n.next++
	handle := n.next
	ch := make(chan nbdReply, 1)
	n.waiting[handle] = nbdPending{ch: ch, readLen: readLen}
	n.mu.Unlock()
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, length)
	n.wmu.Lock()
	_, err := n.c.Write(append(b, data...))
	n.wmu.Unlock()
	if err != nil {
		n.fail(err)
	}
	return <-ch
}

func (n *nbdConn) write(off uint64, data []byte, fua bool) error {
	var flags uint16
	if fua {
		flags = 1
	}
	return n.check(n.do(1, flags, off, uint32(len(data)), data, 0))
}

func (n *nbdConn) flush() error { return n.check(n.do(3, 0, 0, 0, nil, 0)) }

func (n *nbdConn) read(off uint64, length int) ([]byte, error) {
	r := n.do(0, 0, off, uint32(length), nil, length)
	return r.data, n.check(r)
}

func (n *nbdConn) check(r nbdReply) error {
	if r.err != nil {
		return r.err
	}
	if r.errno != 0 {
		return fmt.Errorf("nbd errno %d", r.errno)
	}
	return nil
}

func (n *nbdConn) close() { n.c.Close() }

// writeBlocks writes generation gen of blocks [first, first+count) as
// requests of up to per blocks, depth of them in flight, without FUA.
func writeBlocks(n *nbdConn, first, count, per, depth int, gen uint32) error {
	var wg sync.WaitGroup
	var firstErr atomic.Value
	sem := make(chan struct{}, depth)
	for k := first; k < first+count; k += per {
		m := min(per, first+count-k)
		buf := make([]byte, 0, m*crashBlock)
		for j := k; j < k+m; j++ {
			buf = append(buf, blockData(j, gen)...)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := n.write(uint64(k)*crashBlock, buf, false); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// crashCluster starts 3 sheeps with copies=3, each serving NBD, and
// returns them with their NBD addresses. The VDI is "bench".
func crashCluster(t *testing.T) ([]*Sheep, []string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	sheeps := startNBDCluster(t, 3, 3, addr)
	addrs := []string{addr}
	// The other two serve NBD too from their restart on, so that every
	// node's own copies are read back (a node reads its local copy).
	for range sheeps[1:] {
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(freeTCPPort(t)))
	}
	return sheeps, addrs
}

// restartAll kills (SIGKILL) any sheep still running, starts them all
// again on their dirs, each serving NBD on its address, and waits until
// the cluster runs.
func restartAll(t *testing.T, sheeps []*Sheep, addrs []string) {
	t.Helper()
	for _, s := range sheeps {
		s.Kill()
	}
	for i, s := range sheeps {
		s.start("-z", strconv.Itoa(i), "--nbd", addrs[i])
	}
	for _, s := range sheeps {
		waitRunning(t, s)
	}
}

// badCopyLine matches what a sheep logs when a copy fails its checksums.
var badCopyLine = regexp.MustCompile(`checksum mismatch|copy is bad|repaired bad chunks|checksum attribute damaged`)

// noBadCopies fails the test if any sheep logged a copy failing its
// checksums.
func noBadCopies(t *testing.T, sheeps []*Sheep) {
	t.Helper()
	for i, s := range sheeps {
		log, err := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
		if err != nil {
			t.Fatal(err)
		}
		if m := badCopyLine.FindAll(log, 3); m != nil {
			t.Errorf("node %d logged bad copies: %q", i, m)
		}
	}
}

// readBlocks reads blocks [0, count) through every node's NBD export
// and calls check for each block; a read that fails fails the test.
func readBlocks(t *testing.T, addrs []string, count int, check func(node, k int, b []byte)) {
	t.Helper()
	const per = 256 // 1 MiB reads
	for i, a := range addrs {
		n := dialNBDConn(t, a, "bench")
		for k := 0; k < count; k += per {
			m := min(per, count-k)
			b, err := n.read(uint64(k)*crashBlock, m*crashBlock)
			if err != nil {
				t.Fatalf("node %d: read of blocks [%d,+%d): %v", i, k, m, err)
			}
			for j := 0; j < m; j++ {
				check(i, k+j, b[j*crashBlock:(j+1)*crashBlock])
			}
		}
		n.close()
	}
}

// TestNBDKillAfterFlush: everything written before an NBD FLUSH reads
// back identical, through every node, after every sheep was killed with
// SIGKILL the moment the FLUSH returned. The writes allocate objects
// (a fresh VDI) and overwrite them, in large and small requests, so the
// FLUSH must have stored the objects, the inode's entries and the
// checksums write-back writes kept in memory.
func TestNBDKillAfterFlush(t *testing.T) {
	parallel(t)
	sheeps, addrs := crashCluster(t)
	const blocks = 6 << 20 / crashBlock // 24 MiB: six objects
	n := dialNBDConn(t, addrs[0], "bench")
	want := make([]uint32, blocks)
	if err := writeBlocks(n, 0, blocks, 256, 8, 1); err != nil {
		t.Fatal(err)
	}
	for k := range want {
		want[k] = 1
	}
	// Overwrites: 4 KiB blocks at random, in twos and ones, so that
	// chunks change partially and several times.
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		k := r.IntN(blocks - 1)
		per := 1 + r.IntN(2)
		gen := uint32(2 + i)
		if err := writeBlocks(n, k, per, per, 1, gen); err != nil {
			t.Fatal(err)
		}
		for j := k; j < k+per; j++ {
			want[j] = gen
		}
	}
	if err := n.flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range sheeps {
		s.Kill()
	}
	n.close()
	restartAll(t, sheeps, addrs)
	readBlocks(t, addrs, blocks, func(node, k int, b []byte) {
		if !bytes.Equal(b, blockData(k, want[k])) {
			gen, ok := genOf(k, b)
			t.Fatalf("node %d: block %d holds generation %d (valid %v), want %d", node, k, gen, ok, want[k])
		}
	})
	noBadCopies(t, sheeps)
}

// TestNBDKillDuringWriteBack: sheeps killed with SIGKILL in the middle of
// write-back writes (no FLUSH since the first pass) lose nothing that was
// flushed, and every block written since reads as the data it held at
// the FLUSH or as one of the writes made since, never as an error or a
// mix. The writes overwrite flushed objects and allocate new ones.
func TestNBDKillDuringWriteBack(t *testing.T) {
	parallel(t)
	sheeps, addrs := crashCluster(t)
	const flushed = 4 << 20 / crashBlock * 4 // 16 MiB flushed before
	const blocks = flushed + 4<<20/crashBlock*3
	n := dialNBDConn(t, addrs[0], "bench")
	if err := writeBlocks(n, 0, flushed, 256, 8, 1); err != nil {
		t.Fatal(err)
	}
	if err := n.flush(); err != nil {
		t.Fatal(err)
	}

	// Writers over the whole range (the flushed part and fresh objects),
	// generation 2 and up, until the sheeps die.
	var wrote atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for gen := uint32(2 + w); ; gen += 4 {
				select {
				case <-stop:
					return
				default:
				}
				k := r.IntN(blocks - 64)
				per := 1 + r.IntN(64)
				if writeBlocks(n, k, per, per, 1, gen) != nil {
					return
				}
				wrote.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for wrote.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if wrote.Load() < 200 {
		t.Fatalf("only %d writes acknowledged in 30 s", wrote.Load())
	}
	for _, s := range sheeps {
		s.Kill()
	}
	close(stop)
	n.close()
	wg.Wait()
	restartAll(t, sheeps, addrs)
	newer := 0
	readBlocks(t, addrs, blocks, func(node, k int, b []byte) {
		gen, ok := genOf(k, b)
		switch {
		case !ok:
			t.Fatalf("node %d: block %d holds bytes of no write", node, k)
		case gen == 0 && k < flushed:
			t.Fatalf("node %d: flushed block %d reads as zeros", node, k)
		case gen >= 2:
			newer++
		}
	})
	if newer == 0 {
		t.Fatal("no block written after the FLUSH reads as written: the test did not exercise unflushed writes")
	}
	noBadCopies(t, sheeps)
	settled := 0
	for _, s := range sheeps {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "sheep.log"))
		settled += len(settledLine.FindAll(log, -1))
	}
	t.Logf("%d blocks written after the FLUSH read as written; %d objects were settled (chunks taken as found) after the kill", newer, settled)
}

// settledLine matches what a sheep logs when it takes the chunks of an
// object with unflushed writes as found after a crash.
var settledLine = regexp.MustCompile(`kept its chunks as found|had no checksums; computed them`)
