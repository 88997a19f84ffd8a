package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// treeOf builds the tree of (name, vid, parent, snapshot) rows given in vid
// order; snapshots are labelled "[sN]" to keep the expected text short.
func treeOf(rows ...struct {
	name      string
	vid, pvid uint32
	snap      bool
}) string {
	var nodes []*treeNode
	for _, r := range rows {
		label := "(you are here)"
		if r.snap {
			label = "[s" + strings.Repeat("x", int(r.vid%3)) + "]"
		}
		nodes = append(nodes, &treeNode{name: r.name, label: label, vid: r.vid, pvid: r.pvid})
	}
	return renderTree(buildTree(nodes))
}

type row = struct {
	name      string
	vid, pvid uint32
	snap      bool
}

// TestTreeSession renders the family of dog-session.txt: Alice's snapshot
// with its working VDI, the clone Charlie (another name: a tree of its
// own) and Pre.
func TestTreeSession(t *testing.T) {
	ctime := proto.SheepTime(time.Date(2026, 11, 26, 6, 45, 36, 0, time.UTC))
	inodes := []*proto.Inode{
		{Name: "Alice", VdiID: 0x15d167, CreateTime: ctime, SnapCtime: ctime},
		{Name: "Alice", VdiID: 0x15d168, ParentVdiID: 0x15d167, CreateTime: ctime},
		{Name: "Charlie", VdiID: 0x3ca881, ParentVdiID: 0x15d167, CreateTime: ctime},
		{Name: "Pre", VdiID: 0x5afa26, CreateTime: ctime},
	}
	var nodes []*treeNode
	for _, ino := range inodes {
		nodes = append(nodes, &treeNode{name: ino.Name, label: treeLabel(ino, time.UTC), vid: ino.VdiID, pvid: ino.ParentVdiID})
	}
	got := renderTree(buildTree(nodes))
	if want := sessionOutputs(t)["dog vdi tree"]; got != want {
		t.Errorf("vdi tree:\n%s\nwant\n%s", got, want)
	}
}

func TestTreeBranches(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []row
		want string
	}{
		{"rollback: two children", []row{
			{"A", 1, 0, true}, {"A", 2, 1, true}, {"A", 3, 1, false},
		}, "A---[sx]-+-[sxx]\n" +
			"         `-(you are here)\n"},
		{"nested branches", []row{
			{"A", 3, 0, true}, {"A", 4, 3, true}, {"A", 5, 3, true}, {"A", 6, 4, true}, {"A", 7, 4, false},
		}, "A---[s]-+-[sx]-+-[s]\n" +
			"        |      `-(you are here)\n" +
			"        `-[sxx]\n"},
		{"parent after child (wrapped vids)", []row{
			{"A", 1, 0xfffffe, false}, {"B", 5, 0, false}, {"A", 0xfffffe, 0, true},
		}, "B---(you are here)\n" +
			"A---[sxx]---(you are here)\n"},
	} {
		if got := treeOf(tc.rows...); got != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}

func TestGraphNode(t *testing.T) {
	ctime := proto.SheepTime(time.Date(2026, 11, 26, 6, 45, 36, 0, time.UTC))
	snap := &proto.Inode{Name: "Alice", VdiID: 0x15d167, SnapID: 1, VdiSize: 64 << 20, CreateTime: ctime, SnapCtime: ctime}
	want := "  \"0\" -> \"15d167\";\n" +
		"  \"15d167\" [\n" +
		"    group = \"Alice\",\n" +
		"    label = \"Name:      Alice\\nTag:           1\\nSize:      64 MB\\nDate: 2026-11-26\\nTime:   06:45:36\"\n" +
		"  ];\n\n"
	if got := graphNode(snap, time.UTC); got != want {
		t.Errorf("snapshot node:\n%s\nwant\n%s", got, want)
	}
	work := &proto.Inode{Name: "Alice", VdiID: 0x15d168, ParentVdiID: 0x15d167, SnapID: 2, VdiSize: 64 << 20, CreateTime: ctime}
	got := graphNode(work, time.UTC)
	if !strings.HasPrefix(got, "  \"15d167\" -> \"15d168\";\n") || !strings.Contains(got, "Tag:           0\\n") ||
		!strings.HasSuffix(got, "\",\n    color=\"red\"\n  ];\n\n") {
		t.Errorf("working node:\n%s", got)
	}
}

func TestParseIndex(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"12", 12, true}, {"0x1f", 31, true}, {" 7", 7, true}, {"3abc", 3, true},
		{"-1", ^uint64(0), true}, {"0x", 0, true}, {"abc", 0, false}, {"", 0, false},
	} {
		got, ok := parseIndex(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseIndex(%q) = %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
