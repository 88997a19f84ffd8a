package main

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Cluster snapshots (dog's "cluster snapshot", its farm): the snapshot
// VDIs of a cluster, their inodes, data and vmstate objects, saved to a
// local directory and loaded back into a freshly formatted cluster, where
// each VDI gets a new working VDI on top of its latest snapshot.
//
// The directory is ours, not farm's byte layout (collie both saves and
// loads it), with farm's shape: objects are stored once however many
// snapshots hold them, named by their SHA-1 under objects/xx/, and a
// snapshot is a trunk listing its objects (trunks/IDX.json), logged with
// its index, tag and time in snap.json, together with the cluster's
// copies, policy and block size shift from the first save.

// farmLog is snap.json.
type farmLog struct {
	Copies         uint8      `json:"copies"`
	CopyPolicy     uint8      `json:"copy_policy"`
	BlockSizeShift uint8      `json:"block_size_shift"`
	Snapshots      []farmSnap `json:"snapshots"`
}

type farmSnap struct {
	Idx  int    `json:"idx"`
	Tag  string `json:"tag"`
	Time int64  `json:"time"`
}

// trunkEntry is one object of a snapshot.
type trunkEntry struct {
	Oid            uint64 `json:"oid"`
	Copies         uint8  `json:"copies"`
	CopyPolicy     uint8  `json:"copy_policy"`
	BlockSizeShift uint8  `json:"block_size_shift"`
	SHA1           string `json:"sha1"`
}

type farm struct{ dir string }

func openFarm(dir string) (*farm, error) {
	if err := os.MkdirAll(filepath.Join(dir, "trunks"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "objects"), 0o755); err != nil {
		return nil, err
	}
	return &farm{dir: dir}, nil
}

func (f *farm) readLog() (*farmLog, error) {
	var l farmLog
	b, err := os.ReadFile(filepath.Join(f.dir, "snap.json"))
	if errors.Is(err, os.ErrNotExist) {
		return &l, nil
	}
	if err != nil {
		return nil, err
	}
	return &l, json.Unmarshal(b, &l)
}

// writeJSON replaces name in the farm with v, whole or not at all.
func (f *farm) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(f.dir, name+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(f.dir, name))
}

// find returns the snapshot of index idx (nonzero) or tag.
func (l *farmLog) find(idx int, tag string) (farmSnap, bool) {
	for _, s := range l.Snapshots {
		if (idx != 0 && s.Idx == idx) || (idx == 0 && s.Tag == tag) {
			return s, true
		}
	}
	return farmSnap{}, false
}

func (f *farm) objectPath(sum string) string {
	return filepath.Join(f.dir, "objects", sum[:2], sum)
}

// putObject stores data under its SHA-1 unless it is there already.
func (f *farm) putObject(data []byte) (string, error) {
	h := sha1.Sum(data)
	sum := hex.EncodeToString(h[:])
	p := f.objectPath(sum)
	if _, err := os.Stat(p); err == nil {
		return sum, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", p, os.Getpid())
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return "", err
	}
	return sum, os.Rename(tmp, p)
}

func (f *farm) getObject(sum string) ([]byte, error) {
	if len(sum) != 2*sha1.Size {
		return nil, fmt.Errorf("bad object name %q", sum)
	}
	b, err := os.ReadFile(f.objectPath(sum))
	if err != nil {
		return nil, err
	}
	if h := sha1.Sum(b); hex.EncodeToString(h[:]) != sum {
		return nil, fmt.Errorf("object %s is damaged", sum)
	}
	return b, nil
}

func (f *farm) readTrunk(idx int) ([]trunkEntry, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, "trunks", strconv.Itoa(idx)+".json"))
	if err != nil {
		return nil, err
	}
	var t []trunkEntry
	return t, json.Unmarshal(b, &t)
}

func clusterSnapshot(s *session, args []string) error {
	if len(args) == 0 {
		return usagef("Usage: collie cluster snapshot {save|list|load|show} ...")
	}
	switch args[0] {
	case "save":
		return snapshotSave(s, args[1:])
	case "list":
		return snapshotList(s, args[1:])
	case "load":
		return snapshotLoad(s, args[1:])
	case "show":
		return snapshotShow(s, args[1:])
	}
	return usagef("Usage: collie cluster snapshot {save|list|load|show} ...")
}

// snapshotObjects lists the objects of the snapshot VDIs (of names, when
// given): inode, data objects its table names, vmstate objects. It
// returns how many snapshot VDIs it took.
func (s *session) snapshotObjects(names []string) ([]trunkEntry, int, error) {
	scans, err := s.scanVdis(false, "", 0)
	if err != nil {
		return nil, 0, err
	}
	seen := map[uint64]bool{}
	var out []trunkEntry
	add := func(oid uint64, ino *proto.Inode) {
		if !seen[oid] {
			seen[oid] = true
			out = append(out, trunkEntry{Oid: oid, Copies: ino.NrCopies, CopyPolicy: ino.CopyPolicy, BlockSizeShift: ino.BlockSizeShift})
		}
	}
	n := 0
	for _, sc := range scans {
		ino := sc.ino
		if ino == nil || !ino.IsSnapshot() || (len(names) > 0 && !slices.Contains(names, ino.Name)) {
			continue
		}
		n++
		add(proto.VidToVdiOid(ino.VdiID), ino)
		if ino.StorePolicy == 0 {
			if err := s.readTable(ino); err != nil {
				return nil, 0, failf(exitSysfail, "Failed to read inode of %x: %v", ino.VdiID, err)
			}
			for idx, v := range ino.DataVdiID[:min(dataObjects(ino), proto.MaxDataIndexes)] {
				if v != 0 {
					add(proto.VidToDataOid(v, uint32(idx)), ino)
				}
			}
			ino.DataVdiID = nil
		} else {
			tree, err := s.readTree(ino)
			if err != nil {
				return nil, 0, failf(exitSysfail, "Failed to read inode of %x: %v", ino.VdiID, err)
			}
			tree.Walk(func(idx, v uint32) {
				if v != 0 {
					add(proto.VidToDataOid(v, idx), ino)
				}
			})
		}
		objSize := uint64(ino.ObjectSize())
		for idx := range (ino.VMStateSize + objSize - 1) / objSize {
			add(proto.VidToVmstateOid(ino.VdiID, uint32(idx)), ino)
		}
	}
	return out, n, nil
}

func snapshotSave(s *session, args []string) error {
	if len(args) == 0 {
		return usagef("Please specify the tag of the snapshot.")
	}
	tag := args[0]
	if tag != "" && strings.ContainsAny(tag[:1], "0123456789+- ") {
		return usagef("Tag should not start with number.")
	}
	if len(args) < 2 {
		return usagef("Please specify the path to save snapshot.")
	}
	path, names := args[1], args[2:]
	fail := func(format string, a ...any) error {
		if format != "" {
			fmt.Fprintf(s.stderr, format+"\n", a...)
		}
		return failf(exitSysfail, "Fail to save snapshot to path: %s.", path)
	}
	f, err := openFarm(path)
	if err != nil {
		return fail("Fail to init farm: %v", err)
	}
	log, err := f.readLog()
	if err != nil {
		return fail("%v", err)
	}
	if _, ok := log.find(0, tag); ok {
		return fail("Snapshot tag has already been used for another snapshot, please, use another one.")
	}
	objs, n, err := s.snapshotObjects(names)
	if err != nil {
		return err
	}
	if n == 0 {
		if len(names) > 0 {
			return fail("Cannot execute. It may be caused by:\n1. The specified VDIs are not found.\n2. The specified VDIs don't have snapshots.")
		}
		return fail("Cannot execute. It may be caused by:\n1. The cluster is empty.\n2. All VDIs of the cluster don't have snapshots.")
	}
	if len(log.Snapshots) == 0 {
		ci, err := s.clusterInfo()
		if err != nil {
			return err
		}
		log.Copies, log.CopyPolicy, log.BlockSizeShift = ci.NrCopies, ci.CopyPolicy, ci.BlockSizeShift
	}
	var mu sync.Mutex
	err = parallel(uint64(len(objs)), 8, func(i uint64) error {
		e := &objs[i]
		buf := make([]byte, proto.ObjectSize(e.Oid, e.BlockSizeShift))
		if err := s.readObj(e.Oid, 0, buf, true); err != nil {
			return fail("Fail to save object, oid %016x: %v", e.Oid, err)
		}
		sum, err := f.putObject(buf)
		if err != nil {
			return fail("Fail to save object, oid %016x: %v", e.Oid, err)
		}
		mu.Lock()
		e.SHA1 = sum
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	idx := len(log.Snapshots) + 1
	if err := f.writeJSON(filepath.Join("trunks", strconv.Itoa(idx)+".json"), objs); err != nil {
		return fail("%v", err)
	}
	log.Snapshots = append(log.Snapshots, farmSnap{Idx: idx, Tag: tag, Time: time.Now().Unix()})
	if err := f.writeJSON("snap.json", log); err != nil {
		return fail("%v", err)
	}
	return nil
}

// clusterInfo is CLUSTER_INFO.
func (s *session) clusterInfo() (proto.ClusterInfo, error) {
	var ci proto.ClusterInfo
	req := proto.NewRequest(proto.OpClusterInfo)
	buf := make([]byte, proto.ClusterInfoSize)
	rsp, _, err := s.do(&req, nil, buf)
	if err != nil {
		return ci, err
	}
	if rsp.Result != proto.ResSuccess {
		return ci, failf(exitFailure, "%s", rsp.Result)
	}
	return ci, ci.Unmarshal(buf)
}

func snapshotList(s *session, args []string) error {
	if len(args) == 0 {
		return usagef("Please specify the path of the snapshots.")
	}
	f, err := openFarm(args[0])
	if err != nil {
		return failf(exitSysfail, "Fail to list snapshot.")
	}
	log, err := f.readLog()
	if err != nil {
		return failf(exitSysfail, "Fail to list snapshot.")
	}
	fmt.Fprintf(s.out, "Index\t\tTag\t\tSnapshot Time\n")
	for _, sn := range log.Snapshots {
		// C's ctime(3): "Sat Dec  5 05:22:41 2026\n".
		fmt.Fprintf(s.out, "%d\t\t%s\t\t%s\n", sn.Idx, sn.Tag, time.Unix(sn.Time, 0).Format("Mon Jan _2 15:04:05 2006"))
	}
	return nil
}

// openSnapshot finds the snapshot arg (an index, or a tag) in the farm at
// path and returns its log and objects.
func openSnapshot(arg, path string) (*farm, *farmLog, []trunkEntry, error) {
	idx, err := strconv.Atoi(arg)
	if err != nil || idx < 0 {
		idx = 0
	}
	f, err := openFarm(path)
	if err != nil {
		return nil, nil, nil, err
	}
	log, err := f.readLog()
	if err != nil {
		return nil, nil, nil, err
	}
	sn, ok := log.find(idx, arg)
	if !ok {
		return nil, nil, nil, errSnapshotMissing
	}
	objs, err := f.readTrunk(sn.Idx)
	return f, log, objs, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var errSnapshotMissing = errors.New("Snapshot index or tag does not exist.")

// snapshotInodes decodes the inode objects of a snapshot, in oid order.
func snapshotInodes(f *farm, objs []trunkEntry) ([]*proto.Inode, map[uint32][]byte, error) {
	var inos []*proto.Inode
	raw := map[uint32][]byte{}
	for _, e := range objs {
		if !proto.IsVdiObj(e.Oid) {
			continue
		}
		b, err := f.getObject(e.SHA1)
		if err != nil {
			return nil, nil, err
		}
		ino := &proto.Inode{}
		if err := ino.UnmarshalHeader(b); err != nil {
			return nil, nil, err
		}
		inos = append(inos, ino)
		raw[ino.VdiID] = b
	}
	slices.SortFunc(inos, func(a, b *proto.Inode) int { return int(a.VdiID) - int(b.VdiID) })
	return inos, raw, nil
}

func snapshotShow(s *session, args []string) error {
	if len(args) < 2 {
		return usagef("Please specify the path to show snapshot.")
	}
	f, _, objs, err := openSnapshot(args[0], args[1])
	if err != nil {
		fmt.Fprintln(s.stderr, err)
		return failf(exitSysfail, "Fail to show snapshot")
	}
	inos, _, err := snapshotInodes(f, objs)
	if err != nil {
		fmt.Fprintln(s.stderr, err)
		return failf(exitSysfail, "Fail to show snapshot")
	}
	n := 0
	for _, ino := range inos {
		if len(args) > 2 && !slices.Contains(args[2:], ino.Name) {
			continue
		}
		n++
		fmt.Fprintf(s.out, "%d. VDI id: %x, name: %s, tag: %s\n", n, ino.VdiID, ino.Name, ino.Tag)
	}
	return nil
}

func snapshotLoad(s *session, args []string) error {
	if len(args) < 2 {
		return usagef("Please specify the path to save snapshot.")
	}
	f, log, objs, err := openSnapshot(args[0], args[1])
	fail := func(err error) error {
		if err != nil {
			fmt.Fprintln(s.stderr, err)
		}
		return failf(exitSysfail, "Fail to load snapshot")
	}
	if err != nil {
		return fail(err)
	}
	inos, raw, err := snapshotInodes(f, objs)
	if err != nil {
		return fail(err)
	}
	// Only the VDIs named, when names are given: their inodes and the
	// objects their tables name.
	if names := args[2:]; len(names) > 0 {
		keep := map[uint64]bool{}
		var kept []*proto.Inode
		for _, ino := range inos {
			if !slices.Contains(names, ino.Name) {
				continue
			}
			kept = append(kept, ino)
			keep[proto.VidToVdiOid(ino.VdiID)] = true
			full := &proto.Inode{}
			if err := full.UnmarshalRange(0, raw[ino.VdiID][:proto.GrefOffset]); err != nil {
				return fail(err)
			}
			if ino.StorePolicy == 0 {
				for idx, v := range full.DataVdiID {
					if v != 0 {
						keep[proto.VidToDataOid(v, uint32(idx))] = true
					}
				}
			} else {
				return fail(fmt.Errorf("loading some VDIs of a snapshot holding hyper volumes is not supported"))
			}
			objSize := uint64(ino.ObjectSize())
			for idx := range (ino.VMStateSize + objSize - 1) / objSize {
				keep[proto.VidToVmstateOid(ino.VdiID, uint32(idx))] = true
			}
		}
		objs = slices.DeleteFunc(objs, func(e trunkEntry) bool { return !keep[e.Oid] })
		inos = kept
	}

	// Format with the saved cluster's copies, policy and shift (dog asks
	// first when the cluster is not empty).
	before, err := s.clusterInfo()
	if err != nil {
		return err
	}
	s.opts.copies, s.opts.copyPolicy, s.opts.blockSizeShift = log.Copies, log.CopyPolicy, log.BlockSizeShift
	if err := clusterFormat(s, nil); err != nil {
		return err
	}
	after, err := s.clusterInfo()
	if err != nil {
		return err
	}
	if after.Ctime == before.Ctime {
		return nil // not confirmed
	}

	// Register the vids of every object, as dog does: the snapshots' and
	// those of objects they share with VDIs the snapshot does not hold
	// (deleted before the save), which get an inode without a name, as a
	// deleted VDI has, so that their objects can be created.
	saved := map[uint32]bool{}
	for _, ino := range inos {
		saved[ino.VdiID] = true
	}
	registered := map[uint32]bool{}
	for _, e := range objs {
		v := proto.OidToVid(e.Oid)
		if registered[v] {
			continue
		}
		registered[v] = true
		req := proto.NewRequest(proto.OpNotifyVdiAdd)
		req.SetVdiState(proto.VdiStateArgs{NewVid: v, Copies: e.Copies, CopyPolicy: e.CopyPolicy,
			BlockSizeShift: e.BlockSizeShift, SetBitmap: 1})
		rsp, _, err := s.do(&req, nil, nil)
		if err != nil {
			return err
		}
		if rsp.Result != proto.ResSuccess {
			return fail(fmt.Errorf("Fail to notify vdi add event(%x, %d, %d): %s", v, e.Copies, e.BlockSizeShift, rsp.Result))
		}
		if !saved[v] && proto.IsDataObj(e.Oid) {
			var size uint64
			for _, ino := range inos {
				size = max(size, ino.VdiSize)
			}
			ph := proto.Inode{VdiID: v, VdiSize: size, SnapCtime: 1, NrCopies: e.Copies, CopyPolicy: e.CopyPolicy,
				BlockSizeShift: e.BlockSizeShift, SnapID: 1}
			buf := make([]byte, proto.InodeHeaderSize)
			ph.MarshalHeader(buf)
			if err := s.writeObj(proto.VidToVdiOid(v), buf, 0, e.Copies, e.CopyPolicy, true, true); err != nil {
				return fail(fmt.Errorf("Fail to load object, oid %016x: %v", proto.VidToVdiOid(v), err))
			}
		}
	}
	// Inodes first: creating a data object checks its VDI's size.
	slices.SortStableFunc(objs, func(a, b trunkEntry) int {
		return boolInt(!proto.IsVdiObj(a.Oid)) - boolInt(!proto.IsVdiObj(b.Oid))
	})
	inodes := 0
	for inodes < len(objs) && proto.IsVdiObj(objs[inodes].Oid) {
		inodes++
	}
	load := func(i uint64) error {
		e := objs[i]
		b, err := f.getObject(e.SHA1)
		if err != nil {
			return fail(fmt.Errorf("Fail to load object, oid %016x: %v", e.Oid, err))
		}
		if err := s.writeObj(e.Oid, b, 0, e.Copies, e.CopyPolicy, true, true); err != nil {
			return fail(fmt.Errorf("Fail to load object, oid %016x: %v", e.Oid, err))
		}
		return nil
	}
	if err := parallel(uint64(inodes), 8, load); err != nil {
		return err
	}
	if err := parallel(uint64(len(objs)-inodes), 8, func(i uint64) error { return load(uint64(inodes) + i) }); err != nil {
		return err
	}

	// A working VDI on top of each name's latest snapshot.
	latest := map[string]*proto.Inode{}
	var order []string
	for _, ino := range inos {
		if ino.Name == "" {
			continue
		}
		if l, ok := latest[ino.Name]; !ok || l.SnapID < ino.SnapID {
			if !ok {
				order = append(order, ino.Name)
			}
			latest[ino.Name] = ino
		}
	}
	for _, name := range order {
		ino := latest[name]
		if _, err := s.newVdi(name, ino.VdiSize, ino.VdiID, false, ino.NrCopies, ino.CopyPolicy, ino.StorePolicy, ino.BlockSizeShift); err != nil {
			return err
		}
	}
	return nil
}
