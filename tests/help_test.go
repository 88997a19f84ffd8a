package tests

import (
	"strings"
	"testing"
)

// The collie binary answers "collie help", "collie help CMD", "collie help
// CMD SUB" and "collie CMD SUB -h" for every command it lists, without a
// sheep: the subcommand's usage line, its options and their help text,
// the same text whichever way it is asked (cmd/collie/help_test.go holds
// each usage line against dog's).
func TestHelpEveryCommand(t *testing.T) {
	parallel(t)
	collie := func(args ...string) Result {
		t.Helper()
		return run(t, nil, bin("collie"), args...)
	}
	top := collie("help")
	if top.Code != 0 || !strings.HasPrefix(top.Stdout, "Sheepdog administrator utility") {
		t.Fatalf("collie help: exit %d, %q %q", top.Code, top.Stdout, top.Stderr)
	}
	subs := map[string][]string{}
	var order []string
	for _, l := range strings.Split(top.Stdout, "\n") {
		if !strings.HasPrefix(l, "  ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("collie help: line %q has no description", l)
		}
		if subs[f[0]] == nil {
			order = append(order, f[0])
		}
		subs[f[0]] = append(subs[f[0]], f[1])
	}
	if len(order) != 3 || len(subs["vdi"]) < 10 {
		t.Fatalf("collie help lists %v", subs)
	}
	for _, cmd := range order {
		r := collie("help", cmd)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "Available "+cmd+" commands:\n") {
			t.Errorf("collie help %s: exit %d, %q %q", cmd, r.Code, r.Stdout, r.Stderr)
		}
		for _, sub := range subs[cmd] {
			if !strings.Contains(r.Stdout, "  "+cmd+" "+sub+" ") {
				t.Errorf("collie help %s does not list %s", cmd, sub)
			}
			h := collie(cmd, sub, "-h")
			if h.Code != 0 || h.Stderr != "" || !strings.HasPrefix(h.Stdout, "Usage: collie "+cmd+" "+sub+" ") || !strings.Contains(h.Stdout, "\nOptions:\n") || !strings.Contains(h.Stdout, "\n  -a, --address ") {
				t.Errorf("collie %s %s -h: exit %d, %q %q", cmd, sub, h.Code, h.Stdout, h.Stderr)
				continue
			}
			if hh := collie("help", cmd, sub); hh.Code != 0 || hh.Stdout != h.Stdout {
				t.Errorf("collie help %s %s: exit %d\n%s\ndiffers from -h's\n%s", cmd, sub, hh.Code, hh.Stdout, h.Stdout)
			}
		}
	}
	if r := collie("help", "bogus"); r.Code != 64 || !strings.Contains(r.Stderr, "Invalid command 'bogus'") {
		t.Errorf("collie help bogus: exit %d, %q", r.Code, r.Stderr)
	}
}
