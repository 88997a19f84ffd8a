package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// dashboardPath is the sample Grafana dashboard shipped in the repo.
const dashboardPath = "../../dist/grafana/sheepdog.json"

// exposition starts a Node with --metrics and returns the type of every
// metric family its /metrics endpoint declares ("# TYPE name type").
func exposition(t *testing.T) map[string]string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := testConfig(t, filepath.Join(t.TempDir(), "store"))
	cfg.Metrics = addr
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		n.Close()
	}()
	var body []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		rsp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, err = io.ReadAll(rsp.Body)
			rsp.Body.Close()
			if err == nil && rsp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	types := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	if len(types) == 0 {
		t.Fatalf("no metric families in the exposition:\n%s", body)
	}
	return types
}

// panel is what the test reads of a Grafana panel.
type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

var metricName = regexp.MustCompile(`\b(?:sheepdog|go|process)_[a-zA-Z0-9_]+`)

// Every metric the sample Grafana dashboard queries is one a sheep
// exports (a histogram's _bucket, _sum and _count series included), and
// the dashboard is well formed: unique panel ids, panels inside the
// 24-column grid, every panel with a query.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string  `json:"title"`
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("dashboard without title or uid")
	}
	var exprs []string
	ids := map[int]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q at %+v is outside the grid", p.Title, p.GridPos)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Expr == "" || refs[tg.RefID] || strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
					t.Errorf("panel %q: query %q (refId %q) is empty, repeats a refId or is unbalanced", p.Title, tg.Expr, tg.RefID)
				}
				refs[tg.RefID] = true
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}

	types := exposition(t)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			family := name
			if _, ok := types[name]; !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					base, cut := strings.CutSuffix(name, suffix)
					if cut && (types[base] == "histogram" || types[base] == "summary" && suffix != "_bucket") {
						family = base
					}
				}
			}
			if _, ok := types[family]; !ok {
				t.Errorf("the dashboard queries %s, which a sheep does not export (in %q)", name, e)
				continue
			}
			used[family] = true
		}
	}
	if len(used) < 10 {
		t.Errorf("the dashboard uses only %d metrics: %v", len(used), used)
	}
	var unused []string
	for name := range types {
		if strings.HasPrefix(name, "sheepdog_") && !used[name] {
			unused = append(unused, name)
		}
	}
	if len(unused) > 0 {
		t.Logf("sheepdog metrics no panel shows: %v", unused)
	}
}
