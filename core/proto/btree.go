package proto

import (
	"fmt"
	"slices"
	"sort"
)

// Hyper volume index (docs/protocol.md §3.2, "Hyper volume"). A VDI with
// store_policy 1 keeps, instead of the flat data_vdi_id[2^20], a B-tree of
// at most two levels in Sheepdog's layout:
//
//	header  {u16 magic 0x6274, u16 depth, u32 entries}
//	depth 1 entries {u32 idx, u32 vdi_id}, sorted by idx (a leaf)
//	depth 2 entries {u32 max idx, u32 pad, u64 node oid}, sorted (the root
//	        of leaves kept in 4 MiB objects VidToBtreeOid(vid, n))
//
// The root lives where data_vdi_id starts (DataVdiIDOffset in the inode);
// btree_counter (inode offset 568) numbers the leaf objects. A root of
// zeros (depth 0) is an empty tree: sheep writes a depth-1 header when it
// creates the VDI, and Sheepdog's dog aborts on depth 0.
//
// Btree holds the tree in memory and Set returns the writes that put a
// change on disk, in the order they must be made: a new leaf object and
// btree_counter before the root names the leaf, an appended entry before
// the header that counts it. Every other change is one write of a
// contiguous range, so a crash leaves either the old or the new node,
// never a node whose entries and count disagree. (A crash between an
// appended leaf entry and the root's new max idx leaves an entry past the
// max, invisible to Sheepdog's lookup; DecodeBtree takes it into the last
// leaf, the only one appends go to, as the unacknowledged write it was.)
//
// Pure: no I/O; the caller reads the nodes (DecodeBtree) and makes the
// writes (BtreeWrite).

const (
	// BtreeMagic is INODE_BTREE_MAGIC.
	BtreeMagic = 0x6274
	// BtreeHeaderSize is the size of struct sd_index_header.
	BtreeHeaderSize = 8
	// BtreeNodeSize is the size of the root area and of a leaf object
	// (SD_INODE_DATA_INDEX_SIZE).
	BtreeNodeSize = 4 * MaxDataIndexes
	// MaxBtreeLeaf is the most {idx, vdi_id} entries a node holds.
	MaxBtreeLeaf = (BtreeNodeSize - BtreeHeaderSize) / 8
	// MaxBtreeRoot is the most indirect entries the root holds.
	MaxBtreeRoot = (BtreeNodeSize - BtreeHeaderSize) / 16
	// InodeBtreeCounterOffset is the offset of btree_counter in the inode.
	InodeBtreeCounterOffset = inodeOffBtreeCounter
)

// BtreeIndex is struct sd_index: data index Idx is object Idx of VDI Vid.
type BtreeIndex struct{ Idx, Vid uint32 }

// btreeIndirect is struct sd_indirect_idx plus the leaf it names.
type btreeIndirect struct {
	maxIdx uint32
	oid    uint64
	leaf   []BtreeIndex
}

// Btree is a hyper volume's index in memory.
type Btree struct {
	vid     uint32
	counter uint32 // btree_counter: the next leaf object number
	depth   int    // 1: root is a leaf; 2: root of leaves
	root    []BtreeIndex
	ind     []btreeIndirect
	// Limits, MaxBtreeLeaf and MaxBtreeRoot but in tests.
	maxLeaf, maxRoot int
}

// BtreeWrite is one write a Btree change needs: Data at Off of object Oid
// (the inode, or a leaf object, which Create makes).
type BtreeWrite struct {
	Oid    uint64
	Off    int64
	Data   []byte
	Create bool
}

// NewBtree returns the empty index of hyper volume vid.
func NewBtree(vid uint32) *Btree {
	return &Btree{vid: vid, depth: 1, maxLeaf: MaxBtreeLeaf, maxRoot: MaxBtreeRoot}
}

// NewBtreeRoot is the root area of a fresh hyper volume: a depth-1 header
// with no entries.
func NewBtreeRoot() []byte {
	b := make([]byte, BtreeHeaderSize)
	putBtreeHeader(b, 1, 0)
	return b
}

func putBtreeHeader(b []byte, depth uint16, entries int) {
	le.PutUint16(b[0:], BtreeMagic)
	le.PutUint16(b[2:], depth)
	le.PutUint32(b[4:], uint32(entries))
}

// parseBtreeNode checks a node's header; n is the number of entries and
// size the size of one.
func parseBtreeNode(b []byte, wantDepth uint16, size int, max int) (n int, err error) {
	if len(b) < BtreeHeaderSize {
		return 0, fmt.Errorf("proto: B-tree node of %d bytes", len(b))
	}
	magic, depth, entries := le.Uint16(b), le.Uint16(b[2:]), le.Uint32(b[4:])
	if magic != BtreeMagic || depth != wantDepth {
		return 0, fmt.Errorf("proto: B-tree node magic %#x depth %d, want %#x depth %d", magic, depth, BtreeMagic, wantDepth)
	}
	if entries > uint32(max) || BtreeHeaderSize+int(entries)*size > len(b) {
		return 0, fmt.Errorf("proto: B-tree node of %d entries in %d bytes", entries, len(b))
	}
	return int(entries), nil
}

func parseLeaf(b []byte, max int) ([]BtreeIndex, error) {
	n, err := parseBtreeNode(b, 1, 8, max)
	if err != nil {
		return nil, err
	}
	leaf := make([]BtreeIndex, n)
	for i := range leaf {
		e := b[BtreeHeaderSize+8*i:]
		leaf[i] = BtreeIndex{Idx: le.Uint32(e), Vid: le.Uint32(e[4:])}
		if i > 0 && leaf[i].Idx <= leaf[i-1].Idx {
			return nil, fmt.Errorf("proto: B-tree leaf entries out of order at %d", i)
		}
	}
	return leaf, nil
}

// BtreeRootDepth returns the depth recorded in a root area (0 for a root
// never initialised) and the number of bytes of it that hold entries.
func BtreeRootDepth(root []byte) (depth int, used int, err error) {
	if len(root) < BtreeHeaderSize {
		return 0, 0, fmt.Errorf("proto: B-tree root of %d bytes", len(root))
	}
	d, n := le.Uint16(root[2:]), int(le.Uint32(root[4:]))
	switch {
	case le.Uint32(root) == 0 && n == 0:
		return 0, BtreeHeaderSize, nil
	case le.Uint16(root) != BtreeMagic:
		return 0, 0, fmt.Errorf("proto: B-tree root magic %#x", le.Uint16(root))
	case d == 1 && n <= MaxBtreeLeaf:
		return 1, BtreeHeaderSize + 8*n, nil
	case d == 2 && n <= MaxBtreeRoot:
		return 2, BtreeHeaderSize + 16*n, nil
	}
	return 0, 0, fmt.Errorf("proto: B-tree root of depth %d, %d entries", d, n)
}

// DecodeBtree decodes the index of hyper volume vid: root is the inode's
// data_vdi_id area (at least the bytes BtreeRootDepth says are used),
// counter its btree_counter, and readNode reads a leaf object.
func DecodeBtree(vid, counter uint32, root []byte, readNode func(oid uint64) ([]byte, error)) (*Btree, error) {
	t := NewBtree(vid)
	t.counter = counter
	depth, _, err := BtreeRootDepth(root)
	if err != nil {
		return nil, err
	}
	switch depth {
	case 0:
		return t, nil
	case 1:
		t.root, err = parseLeaf(root, t.maxLeaf)
		return t, err
	}
	n, err := parseBtreeNode(root, 2, 16, t.maxRoot)
	if err != nil {
		return nil, err
	}
	t.depth = 2
	t.ind = make([]btreeIndirect, n)
	for i := range t.ind {
		e := root[BtreeHeaderSize+16*i:]
		in := &t.ind[i]
		in.maxIdx, in.oid = le.Uint32(e), le.Uint64(e[8:])
		b, err := readNode(in.oid)
		if err != nil {
			return nil, fmt.Errorf("proto: read B-tree node %016x: %w", in.oid, err)
		}
		if in.leaf, err = parseLeaf(b, t.maxLeaf); err != nil {
			return nil, fmt.Errorf("node %016x: %w", in.oid, err)
		}
		if len(in.leaf) > 0 && i == n-1 {
			in.maxIdx = max(in.maxIdx, in.leaf[len(in.leaf)-1].Idx)
		}
		if i > 0 && in.maxIdx <= t.ind[i-1].maxIdx {
			return nil, fmt.Errorf("proto: B-tree root entries out of order at %d", i)
		}
	}
	return t, nil
}

// Counter is btree_counter as it stands.
func (t *Btree) Counter() uint32 { return t.counter }

// Depth is the depth of the tree (1 or 2).
func (t *Btree) Depth() int { return t.depth }

// Get returns the vid whose object backs data index idx (0: a hole).
func (t *Btree) Get(idx uint32) uint32 {
	leaf := t.root
	if t.depth == 2 {
		p := sort.Search(len(t.ind), func(i int) bool { return t.ind[i].maxIdx >= idx })
		if p == len(t.ind) {
			return 0
		}
		leaf = t.ind[p].leaf
	}
	if pos, ok := findIdx(leaf, idx); ok {
		return leaf[pos].Vid
	}
	return 0
}

// Walk calls fn for every entry in index order.
func (t *Btree) Walk(fn func(idx, vid uint32)) {
	each := func(leaf []BtreeIndex) {
		for _, e := range leaf {
			fn(e.Idx, e.Vid)
		}
	}
	if t.depth == 1 {
		each(t.root)
		return
	}
	for _, in := range t.ind {
		each(in.leaf)
	}
}

// Nodes lists the leaf objects of the tree.
func (t *Btree) Nodes() []uint64 {
	var oids []uint64
	for _, in := range t.ind {
		oids = append(oids, in.oid)
	}
	return oids
}

func findIdx(leaf []BtreeIndex, idx uint32) (int, bool) {
	pos := sort.Search(len(leaf), func(i int) bool { return leaf[i].Idx >= idx })
	return pos, pos < len(leaf) && leaf[pos].Idx == idx
}

// Set makes data index idx name vid and returns the writes that store the
// change, in order. It fails only when the tree is full (2^37 objects).
func (t *Btree) Set(idx, vid uint32) ([]BtreeWrite, error) {
	var w []BtreeWrite
	for {
		var done bool
		var err error
		if t.depth == 1 {
			done = t.setRoot(idx, vid, &w)
		} else {
			done, err = t.setDeep(idx, vid, &w)
		}
		if err != nil || done {
			return w, err
		}
	}
}

// rootOid is the inode, whose data_vdi_id area holds the root.
func (t *Btree) rootOid() uint64 { return VidToVdiOid(t.vid) }

// setRoot is Set for a tree whose root is its leaf; false means the root
// was split and the caller tries again.
func (t *Btree) setRoot(idx, vid uint32, w *[]BtreeWrite) bool {
	pos, found := findIdx(t.root, idx)
	if found {
		t.root[pos].Vid = vid
		*w = append(*w, entryWrite(t.rootOid(), DataVdiIDOffset, pos, t.root[pos]))
		return true
	}
	if len(t.root) >= t.maxLeaf {
		t.splitRoot(w)
		return false
	}
	t.root = slices.Insert(t.root, pos, BtreeIndex{idx, vid})
	*w = append(*w, insertWrites(t.rootOid(), DataVdiIDOffset, t.root, pos)...)
	return true
}

// splitRoot moves the root's entries into two new leaves and makes the
// root name them (depth 2).
func (t *Btree) splitRoot(w *[]BtreeWrite) {
	half := len(t.root) / 2
	left := &btreeIndirect{leaf: slices.Clone(t.root[:half])}
	right := &btreeIndirect{leaf: slices.Clone(t.root[half:])}
	for _, in := range []*btreeIndirect{left, right} {
		in.oid = VidToBtreeOid(t.vid, t.counter)
		t.counter++
		in.maxIdx = in.leaf[len(in.leaf)-1].Idx
		*w = append(*w, BtreeWrite{Oid: in.oid, Data: encodeLeaf(in.leaf), Create: true})
	}
	t.depth, t.root, t.ind = 2, nil, []btreeIndirect{*left, *right}
	*w = append(*w, t.counterWrite(), BtreeWrite{Oid: t.rootOid(), Off: DataVdiIDOffset, Data: t.encodeRoot()})
}

// setDeep is Set for a depth-2 tree; false means a leaf was split and the
// caller tries again.
func (t *Btree) setDeep(idx, vid uint32, w *[]BtreeWrite) (bool, error) {
	p := sort.Search(len(t.ind), func(i int) bool { return t.ind[i].maxIdx >= idx })
	if p < len(t.ind) {
		in := &t.ind[p]
		pos, found := findIdx(in.leaf, idx)
		if found {
			in.leaf[pos].Vid = vid
			*w = append(*w, entryWrite(in.oid, 0, pos, in.leaf[pos]))
			return true, nil
		}
		if len(in.leaf) >= t.maxLeaf {
			return false, t.splitLeaf(p, w)
		}
		in.leaf = slices.Insert(in.leaf, pos, BtreeIndex{idx, vid})
		*w = append(*w, insertWrites(in.oid, 0, in.leaf, pos)...)
		return true, nil
	}
	// Past every leaf: append to the last one while it has room.
	if n := len(t.ind); n > 0 && len(t.ind[n-1].leaf) < t.maxLeaf {
		in := &t.ind[n-1]
		in.leaf = append(in.leaf, BtreeIndex{idx, vid})
		in.maxIdx = idx
		*w = append(*w, insertWrites(in.oid, 0, in.leaf, len(in.leaf)-1)...)
		*w = append(*w, BtreeWrite{Oid: t.rootOid(), Off: DataVdiIDOffset + BtreeHeaderSize + 16*int64(n-1),
			Data: le.AppendUint32(nil, idx)})
		return true, nil
	}
	if len(t.ind) >= t.maxRoot {
		return false, fmt.Errorf("proto: B-tree of vdi %x is full: %w", t.vid, ResNoSpace)
	}
	in := btreeIndirect{maxIdx: idx, oid: VidToBtreeOid(t.vid, t.counter), leaf: []BtreeIndex{{idx, vid}}}
	t.counter++
	t.ind = append(t.ind, in)
	*w = append(*w, BtreeWrite{Oid: in.oid, Data: encodeLeaf(in.leaf), Create: true}, t.counterWrite())
	*w = append(*w, t.rootAppendWrites()...)
	return true, nil
}

// splitLeaf moves the first half of leaf p into a new leaf named before
// it in the root.
func (t *Btree) splitLeaf(p int, w *[]BtreeWrite) error {
	if len(t.ind) >= t.maxRoot {
		return fmt.Errorf("proto: B-tree of vdi %x is full: %w", t.vid, ResNoSpace)
	}
	old := &t.ind[p]
	half := len(old.leaf) / 2
	left := btreeIndirect{oid: VidToBtreeOid(t.vid, t.counter), leaf: slices.Clone(old.leaf[:half])}
	t.counter++
	left.maxIdx = left.leaf[half-1].Idx
	old.leaf = slices.Clone(old.leaf[half:])
	*w = append(*w, BtreeWrite{Oid: left.oid, Data: encodeLeaf(left.leaf), Create: true}, t.counterWrite())
	t.ind = slices.Insert(t.ind, p, left)
	// The root names the new leaf before the old one loses its entries:
	// in between, a lookup finds them in the new leaf.
	*w = append(*w, BtreeWrite{Oid: t.rootOid(), Off: DataVdiIDOffset, Data: t.encodeRoot()})
	*w = append(*w, BtreeWrite{Oid: t.ind[p+1].oid, Data: encodeLeaf(t.ind[p+1].leaf)})
	return nil
}

func (t *Btree) counterWrite() BtreeWrite {
	return BtreeWrite{Oid: t.rootOid(), Off: InodeBtreeCounterOffset, Data: le.AppendUint32(nil, t.counter)}
}

// encodeRoot is the used part of the root area.
func (t *Btree) encodeRoot() []byte {
	if t.depth == 1 {
		return encodeLeaf(t.root)
	}
	b := make([]byte, BtreeHeaderSize+16*len(t.ind))
	putBtreeHeader(b, 2, len(t.ind))
	for i, in := range t.ind {
		e := b[BtreeHeaderSize+16*i:]
		le.PutUint32(e, in.maxIdx)
		le.PutUint64(e[8:], in.oid)
	}
	return b
}

// rootAppendWrites stores the root's last indirect entry, then its count.
func (t *Btree) rootAppendWrites() []BtreeWrite {
	n := len(t.ind)
	root := t.encodeRoot()
	off := BtreeHeaderSize + 16*(n-1)
	return []BtreeWrite{
		{Oid: t.rootOid(), Off: DataVdiIDOffset + int64(off), Data: root[off:]},
		{Oid: t.rootOid(), Off: DataVdiIDOffset, Data: root[:BtreeHeaderSize]},
	}
}

// Root is the used part of the root area, as stored.
func (t *Btree) Root() []byte { return t.encodeRoot() }

func encodeLeaf(leaf []BtreeIndex) []byte {
	b := make([]byte, BtreeHeaderSize+8*len(leaf))
	putBtreeHeader(b, 1, len(leaf))
	for i, e := range leaf {
		le.PutUint32(b[BtreeHeaderSize+8*i:], e.Idx)
		le.PutUint32(b[BtreeHeaderSize+8*i+4:], e.Vid)
	}
	return b
}

// entryWrite stores entry pos of a leaf node at base in oid.
func entryWrite(oid uint64, base int64, pos int, e BtreeIndex) BtreeWrite {
	b := le.AppendUint32(le.AppendUint32(nil, e.Idx), e.Vid)
	return BtreeWrite{Oid: oid, Off: base + BtreeHeaderSize + 8*int64(pos), Data: b}
}

// insertWrites stores leaf (at base in oid) after an entry was inserted
// at pos: an append is the entry, then the header that counts it; an
// insertion before the end moves entries and is one write of the header
// through the last entry.
func insertWrites(oid uint64, base int64, leaf []BtreeIndex, pos int) []BtreeWrite {
	b := encodeLeaf(leaf)
	if pos == len(leaf)-1 {
		off := BtreeHeaderSize + 8*pos
		return []BtreeWrite{
			{Oid: oid, Off: base + int64(off), Data: b[off:]},
			{Oid: oid, Off: base, Data: b[:BtreeHeaderSize]},
		}
	}
	return []BtreeWrite{{Oid: oid, Off: base, Data: b}}
}
