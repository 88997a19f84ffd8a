package docs

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// urlRE matches a URL, whose .md files live elsewhere.
	urlRE = regexp.MustCompile(`[a-z][a-z0-9+.-]*://\S+`)
	// mdRefRE matches a Markdown file name cited in text, and the run of
	// section references that follows it: "docs/protocol.md §4.3, §4.4",
	// "docs/design.md §7 "Durability"", "§1.1–§1.4".
	mdRefRE = regexp.MustCompile(`([\w./-]*[\w-]\.md)\b((?:[\s,;–-]*(?:and\s+)?§\s*[0-9][0-9.]*(?:\s+"[^"]+")?)*)`)
	// sectionRE matches one section reference inside such a run.
	sectionRE = regexp.MustCompile(`§\s*([0-9][0-9.]*[0-9]|[0-9])(?:\s+"([^"]+)")?`)
	// headingRE matches a numbered Markdown heading: "## 5. Placement",
	// "### 5.6 Recovery".
	headingRE = regexp.MustCompile(`^#+\s+([0-9]+(?:\.[0-9]+)*)\.?\s+(.*)$`)
	// linkRE matches a relative Markdown link to a .md file.
	linkRE = regexp.MustCompile(`\]\(([^):#]+\.md)(?:#[^)]*)?\)`)
)

// repoRoot is the repository's top directory (this package sits in docs/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", root, err)
	}
	return root
}

// headings returns the numbered sections of a Markdown file: number →
// title.
func headings(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := headingRE.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out, sc.Err()
}

// ref is one citation of a Markdown file found in a Go comment.
type ref struct {
	where    string // file:line of the comment
	file     string // as cited, relative to the repository root
	sections []section
}

type section struct{ number, title string }

// parseRefs finds the Markdown citations in one comment's text.
func parseRefs(text string) []ref {
	text = urlRE.ReplaceAllString(text, "")
	var out []ref
	for _, m := range mdRefRE.FindAllStringSubmatch(text, -1) {
		r := ref{file: m[1]}
		for _, s := range sectionRE.FindAllStringSubmatch(m[2], -1) {
			// A title may wrap across comment lines.
			r.sections = append(r.sections, section{s[1], strings.Join(strings.Fields(s[2]), " ")})
		}
		out = append(out, r)
	}
	return out
}

// goRefs returns every Markdown citation in the comments of the
// repository's Go files.
func goRefs(t *testing.T, root string) []ref {
	t.Helper()
	var out []ref
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, g := range f.Comments {
			for _, r := range parseRefs(g.Text()) {
				r.where = fmt.Sprintf("%s:%d", rel, fset.Position(g.Pos()).Line)
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGoCommentsCiteExistingDocs: every Markdown file a Go comment names
// exists in the repository, at the path given from the repository root,
// and every section it cites ("§5.6", "§7 "Durability"") is a heading of
// that file with that title.
func TestGoCommentsCiteExistingDocs(t *testing.T) {
	root := repoRoot(t)
	refs := goRefs(t, root)
	if len(refs) < 40 {
		// The code cites the docs in about sixty places; far fewer means
		// the scan is broken, not that the citations are gone.
		t.Fatalf("found only %d citations of Markdown files in Go comments", len(refs))
	}
	cache := map[string]map[string]string{}
	for _, r := range refs {
		heads, ok := cache[r.file]
		if !ok {
			var err error
			heads, err = headings(filepath.Join(root, filepath.FromSlash(r.file)))
			if err != nil {
				heads = nil
				t.Errorf("%s: cites %s, which is not in the repository (%v)", r.where, r.file, err)
			}
			cache[r.file] = heads
		}
		if heads == nil {
			continue
		}
		for _, s := range r.sections {
			title, ok := heads[s.number]
			switch {
			case !ok:
				t.Errorf("%s: cites %s §%s, which has no such section", r.where, r.file, s.number)
			case s.title != "" && !strings.EqualFold(title, s.title):
				t.Errorf("%s: cites %s §%s %q, but that section is %q", r.where, r.file, s.number, s.title, title)
			}
		}
	}
}

// TestMarkdownLinksResolve: the relative .md links of README.md and of
// the pages in docs/ point at files that exist.
func TestMarkdownLinksResolve(t *testing.T) {
	root := repoRoot(t)
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(pages) < 3 {
		t.Fatalf("docs pages: %v, %v", pages, err)
	}
	for _, p := range append(pages, filepath.Join(root, "README.md")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), filepath.FromSlash(m[1]))); err != nil {
				t.Errorf("%s links to %s: %v", filepath.Base(p), m[1], err)
			}
		}
	}
}

// TestParseRefs pins the citation forms the scan understands, so that a
// change to the patterns cannot quietly stop checking them.
func TestParseRefs(t *testing.T) {
	for _, c := range []struct {
		text string
		want string
	}{
		{"see docs/protocol.md §4.3.", "docs/protocol.md[4.3]"},
		{"(docs/qemu-client.md §8.13, §8.14; docs/protocol.md §4.4)", "docs/qemu-client.md[8.13 8.14] docs/protocol.md[4.4]"},
		{"(docs/protocol.md §1–§5)", "docs/protocol.md[1 5]"},
		{"(docs/protocol.md §1.1–§1.4 says)", "docs/protocol.md[1.1 1.4]"},
		{`(docs/design.md §7 "Durability"). Writes`, `docs/design.md[7"Durability"]`},
		{"docs/qemu-client.md\n§9), instead", "docs/qemu-client.md[9]"},
		{"PROTOCOL.md §2", "PROTOCOL.md[2]"},
		{"https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md.", ""},
		{"the §3.1 layout", ""},
	} {
		var got []string
		for _, r := range parseRefs(c.text) {
			var secs []string
			for _, s := range r.sections {
				if s.title != "" {
					secs = append(secs, s.number+`"`+s.title+`"`)
				} else {
					secs = append(secs, s.number)
				}
			}
			got = append(got, r.file+"["+strings.Join(secs, " ")+"]")
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("parseRefs(%q) = %q, want %q", c.text, g, c.want)
		}
	}
}
