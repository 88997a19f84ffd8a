package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// isTerminal reports whether w (stdout or stdin) is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Terminal attributes dog puts around the working VDIs of "vdi tree"
// when stdout is a terminal.
const (
	textBold   = "\033[1m"
	textNormal = "\033[0m"
)

// treeNode is one VDI in dog's tree view (treeview.c).
type treeNode struct {
	name, label string
	vid, pvid   uint32
	highlight   bool
	children    []*treeNode
}

// find is a depth-first search for the node with vid and name.
func (n *treeNode) find(vid uint32, name string) *treeNode {
	for _, c := range n.children {
		if c.vid == vid && c.name == name {
			return c
		}
		if f := c.find(vid, name); f != nil {
			return f
		}
	}
	return nil
}

func (n *treeNode) remove(c *treeNode) {
	for i, x := range n.children {
		if x == c {
			n.children = append(n.children[:i], n.children[i+1:]...)
			return
		}
	}
}

// buildTree adds the VDIs in vid order under the node of their parent vid
// with the same name (a clone, whose parent has another name, starts a tree
// of its own), then moves nodes whose parent was added after them, as
// dog's add_vdi_tree and compaction do.
func buildTree(nodes []*treeNode) *treeNode {
	root := &treeNode{}
	for _, n := range nodes {
		parent := root.find(n.pvid, n.name)
		if parent == nil {
			parent = root
		}
		parent.children = append(parent.children, n)
	}
	var compact func(parent *treeNode)
	compact = func(parent *treeNode) {
		for _, n := range append([]*treeNode(nil), parent.children...) {
			if np := root.find(n.pvid, n.name); np != nil && np != parent && np != n {
				parent.remove(n)
				np.children = append(np.children, n)
			}
			compact(n)
		}
	}
	compact(root)
	return root
}

// renderTree is dog's dump_tree: each root's name, then its labels joined
// by "---" (one child), "-+-" (the first of several), "|-" and "`-" (the
// others), indented under their parent's label.
func renderTree(root *treeNode) string {
	var b strings.Builder
	var width []int
	var more []bool
	grow := func(level int) {
		for len(width) <= level {
			width, more = append(width, 0), append(more, false)
		}
	}
	var dump func(cur *treeNode, level int, first, last bool)
	dump = func(cur *treeNode, level int, first, last bool) {
		grow(level)
		switch {
		case first && last:
			b.WriteString("---")
		case first:
			b.WriteString("-+-")
		default:
			for lvl := 0; lvl < level-1; lvl++ {
				b.WriteString(strings.Repeat(" ", width[lvl]+1))
				if more[lvl+1] {
					b.WriteString("| ")
				} else {
					b.WriteString("  ")
				}
			}
			b.WriteString(strings.Repeat(" ", width[level-1]+1))
			if last {
				b.WriteString("`-")
			} else {
				b.WriteString("|-")
			}
		}
		if cur.highlight {
			b.WriteString(textBold + cur.label + textNormal)
		} else {
			b.WriteString(cur.label)
		}
		if len(cur.children) == 0 {
			b.WriteByte('\n')
			return
		}
		more[level], width[level] = !last, len(cur.label)
		for i, c := range cur.children {
			dump(c, level+1, i == 0, i == len(cur.children)-1)
		}
	}
	for _, n := range root.children {
		grow(0)
		b.WriteString(n.name)
		more[0], width[0] = false, len(n.name)
		dump(n, 1, true, true)
	}
	return b.String()
}

// treeLabel is a snapshot's "[YYYY-MM-DD HH:MM]" (its create time) or a
// working VDI's "(you are here)".
func treeLabel(ino *proto.Inode, loc *time.Location) string {
	if ino.IsSnapshot() {
		return time.Unix(proto.SheepTimeSeconds(ino.CreateTime), 0).In(loc).Format("[2006-01-02 15:04]")
	}
	return "(you are here)"
}

func vdiTree(s *session, _ []string) error {
	scans, err := s.scanVdis(false, "", 0)
	if err != nil {
		return err
	}
	var nodes []*treeNode
	for _, r := range scans {
		if r.ino == nil {
			continue
		}
		nodes = append(nodes, &treeNode{name: r.ino.Name, label: treeLabel(r.ino, time.Local), vid: r.ino.VdiID,
			pvid: r.ino.ParentVdiID, highlight: s.stdoutTTY && !s.opts.raw && !r.ino.IsSnapshot()})
	}
	s.out.WriteString(renderTree(buildTree(nodes)))
	return nil
}

// graphHeader and graphFooter frame "vdi graph"'s Graphviz digraph.
const (
	graphHeader = "digraph G {\n  node [shape = \"box\", fontname = \"Courier\"];\n\n" +
		"  \"0\" [shape = \"ellipse\", label = \"root\"];\n\n"
	graphFooter = "}\n"
)

// graphNode is one VDI of "vdi graph": the edge from its parent and a box
// labelled with name, snapshot id, size, date and time; working VDIs red.
func graphNode(ino *proto.Inode, loc *time.Location) string {
	var snapID uint32
	if ino.IsSnapshot() {
		snapID = ino.SnapID
	}
	t := time.Unix(proto.SheepTimeSeconds(ino.CreateTime), 0).In(loc)
	var b strings.Builder
	fmt.Fprintf(&b, "  \"%x\" -> \"%x\";\n", ino.ParentVdiID, ino.VdiID)
	fmt.Fprintf(&b, "  \"%x\" [\n    group = \"%s\",\n    label = \"", ino.VdiID, ino.Name)
	fmt.Fprintf(&b, "Name: %s\\nTag:  %10x\\nSize: %s\\nDate: %s\\nTime: %s", padLeft(ino.Name, 10), snapID,
		padLeft(strnumber(ino.VdiSize, false), 10), padLeft(t.Format("2006-01-02"), 10), padLeft(t.Format("15:04:05"), 10))
	if ino.IsSnapshot() {
		b.WriteString("\"\n  ];\n\n")
	} else {
		b.WriteString("\",\n    color=\"red\"\n  ];\n\n")
	}
	return b.String()
}

func vdiGraph(s *session, _ []string) error {
	s.out.WriteString(graphHeader)
	scans, err := s.scanVdis(false, "", 0)
	if err != nil {
		return err
	}
	for _, r := range scans {
		if r.ino != nil {
			s.out.WriteString(graphNode(r.ino, time.Local))
		}
	}
	s.out.WriteString(graphFooter)
	return nil
}
