package main

import (
	"strings"
	"testing"
)

const logLevelList = "emerg\t(0)\nalert\t(1)\ncrit\t(2)\nerr\t(3)\nwarning\t(4)\nnotice\t(5)\ninfo\t(6)\ndebug\t(7)\n"

func TestLogLevelNames(t *testing.T) {
	for i, name := range []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"} {
		if got := logLevelNumber(name); got != int32(i) {
			t.Errorf("logLevelNumber(%q) = %d, want %d", name, got, i)
		}
		if got := logLevelName(int32(i)); got != name {
			t.Errorf("logLevelName(%d) = %q, want %q", i, got, name)
		}
	}
	// dog compares with strcmp: no abbreviations, no other case.
	for _, name := range []string{"", "Debug", "warn", "error", "info ", "7"} {
		if got := logLevelNumber(name); got != -1 {
			t.Errorf("logLevelNumber(%q) = %d, want -1", name, got)
		}
	}
	for _, l := range []int32{-1, 8} {
		if got := logLevelName(l); got != "unknown loglevel" {
			t.Errorf("logLevelName(%d) = %q", l, got)
		}
	}
}

// TestNodeLogLocal covers what runs without a sheep: the list, a bad level
// name and malformed command lines.
func TestNodeLogLocal(t *testing.T) {
	for _, tc := range []struct {
		argv   []string
		code   int
		stderr string // prefix
	}{
		{[]string{"node", "log", "level", "list"}, exitSuccess, logLevelList},
		{[]string{"node", "log", "level", "set", "loud"}, exitFailure,
			"invalid loglevel: loud\navailable loglevels:\n" + logLevelList},
		{[]string{"node", "log"}, exitUsage, "Usage: collie node log "},
		{[]string{"node", "log", "level"}, exitUsage, "Usage: collie node log "},
		{[]string{"node", "log", "level", "set"}, exitUsage, "Usage: collie node log "},
		{[]string{"node", "log", "volume"}, exitFailure, "Usage: collie node log "},
		{[]string{"node", "log", "level", "louder"}, exitFailure, "Usage: collie node log "},
	} {
		code, stdout, stderr := runCollie(append(tc.argv, "-p", "1")...)
		if code != tc.code || stdout != "" || !strings.HasPrefix(stderr, tc.stderr) {
			t.Errorf("collie %s: exit %d, stdout %q, stderr %q; want exit %d, stderr %q...",
				strings.Join(tc.argv, " "), code, stdout, stderr, tc.code, tc.stderr)
		}
	}
}
