package main

import (
	"log/slog"
	"strings"
	"testing"
)

func TestParseLog(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want logOptions
		err  string
	}{
		{"level=info", logOptions{level: slog.LevelInfo, dst: "default"}, ""},
		{"level=debug,dir=/var/log/sheep,format=json", logOptions{level: slog.LevelDebug, dir: "/var/log/sheep", json: true, dst: "default"}, ""},
		{"format=server,dst=stdout,level=warning", logOptions{level: slog.LevelWarn, dst: "stdout"}, ""},
		{"level=loud", logOptions{}, "unknown log level"},
		{"dst=syslog", logOptions{}, "syslog is not supported"},
		{"format=xml", logOptions{}, "unknown log format"},
		{"dir=", logOptions{}, "needs a directory"},
		{"colour=yes", logOptions{}, "unknown log option"},
	} {
		got, err := parseLog(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}
