package replicated

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLibLogLevelsAndRate(t *testing.T) {
	var buf bytes.Buffer
	l := newLibLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft", 3)
	l.Write([]byte("2026-01-02T15:04:05.000Z [INFO]  raft: entering leader state: leader=\"Node at x\"\n"))
	l.Write([]byte("2026/01/02 15:04:05 [DEBUG] memberlist: probing\n"))
	l.Write([]byte("2026/01/02 15:04:05 [WARN] memberlist: refused\n2026/01/02 15:04:05 [ERROR] memberlist: failed\n"))
	for range 10 {
		l.Write([]byte("[INFO] raft: flapping\n"))
	}
	out := buf.String()
	if !strings.Contains(out, `level=INFO msg="raft: entering leader state: leader=\"Node at x\"" lib=raft`) {
		t.Errorf("info line: %s", out)
	}
	if strings.Contains(out, "probing") {
		t.Errorf("debug line logged at info: %s", out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("levels lost: %s", out)
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d lines within one second, want the rate of 3:\n%s", n, out)
	}
}
