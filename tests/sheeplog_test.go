package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sheep -l dir=DIR,format=json writes JSON lines to DIR/sheep.log instead
// of the store dir; an option sheep does not offer is refused at start.
func TestSheepLogOptions(t *testing.T) {
	logDir := filepath.Join(t.TempDir(), "logs")
	s := startSheep(t, "-l", "level=debug,format=json,dir="+logDir)
	s.must(t, nil, "cluster", "format", "--copies=1")
	var lines []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(logDir, "sheep.log"))
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if strings.Contains(string(b), "cluster formatted") || time.Now().After(deadline) {
			break
		}
	}
	formatted := false
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q (%v)", l, err)
		}
		formatted = formatted || rec["msg"] == "cluster formatted"
	}
	if !formatted {
		t.Fatalf("no \"cluster formatted\" record in %s:\n%s", logDir, strings.Join(lines, "\n"))
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "sheep.log")); err == nil {
		t.Error("sheep.log written to the store dir too")
	}

	r := run(t, nil, bin("sheep"), "-f", "-l", "dst=syslog", t.TempDir())
	if r.Code == 0 || !strings.Contains(r.Stderr, "syslog is not supported") {
		t.Fatalf("sheep -l dst=syslog: exit %d, stderr %q", r.Code, r.Stderr)
	}
}
