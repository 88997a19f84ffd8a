package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dogUsage is the first line of "dog CMD SUB -h" for every subcommand we
// have, worked out from Sheepdog 1.0's dog/{vdi,node,cluster}.c command
// tables (subcommand_usage in dog/dog.c) with "dog" as "collie". Where
// ours differs on purpose the line says so.
var dogUsage = map[string]string{
	"vdi check":          "[-s snapshot] [-e] [-a address] [-p port] [-h] [-T] <vdiname>",
	"vdi create":         "[-P] [-y] [-c copies] [-a address] [-p port] [-h] [-r] [-v] [-z block_size_shift] [-T] <vdiname> <size>",
	"vdi snapshot":       "[-s snapshot] [-a address] [-p port] [-h] [-r] [-v] [-T] [-R] <vdiname>",
	"vdi clone":          "[-s snapshot] [-P] [-n] [-a address] [-p port] [-h] [-r] [-v] [-T] <src vdi> <dst vdi>",
	"vdi delete":         "[-s snapshot] [-a address] [-p port] [-h] [-T] [-B nr-batched-reclamation] [-I reclamation-interval] [-m max-reclaim] <vdiname>",
	"vdi rollback":       "[-s snapshot] [-a address] [-p port] [-h] [-f] [-r] [-v] [-T] [-B nr-batched-reclamation] [-I reclamation-interval] <vdiname>",
	"vdi list":           "[-a address] [-p port] [-r] [-h] [-o oid] [-T] [vdiname]",
	"vdi tree":           "[-a address] [-p port] [-h] [-T]",
	"vdi graph":          "[-a address] [-p port] [-h] [-T]",
	"vdi object":         "{location|map|dump-inode} [-i index] [-s snapshot] [-a address] [-p port] [-h] [-T] <vdiname>",
	"vdi setattr":        "[-d] [-x] [-a address] [-p port] [-h] [-T] <vdiname> <key> [value]",
	"vdi getattr":        "[-a address] [-p port] [-h] [-T] <vdiname> <key>",
	"vdi resize":         "[-a address] [-p port] [-h] [-T] <vdiname> <new size>",
	"vdi read":           "[-s snapshot] [-a address] [-p port] [-h] [-T] <vdiname> [<offset> [<len>]]",
	"vdi write":          "[-a address] [-p port] [-w] [-h] [-T] <vdiname> [<offset> [<len>]]",
	"vdi backup":         "[-s snapshot] [-F from] [-a address] [-p port] [-h] [-T] <vdiname>",
	"vdi restore":        "[-s snapshot] [-a address] [-p port] [-h] [-T] [-B nr-batched-reclamation] [-I reclamation-interval] <vdiname>",
	"vdi alter-copy":     "[-c copies] [-a address] [-p port] [-h] [-T] [-f] <vdiname>",
	"vdi lock":           "{list|unlock} [-s snapshot] [-a address] [-p port] [-r] [-h] [-T]",                  // ours adds -r (vdi lock list -r)
	"vdi cache":          "{flush|delete|info|purge} [-s snapshot] [-a address] [-p port] [-h] [-T] <vdiname>", // dog 0.x's
	"node kill":          "[-a address] [-p port] [-r] [-h] [-l] [-T] <node id>",
	"node list":          "[-a address] [-p port] [-r] [-h] [-v] [-T]", // ours adds -v (what gossip sees alive)
	"node info":          "[-a address] [-p port] [-r] [-h] [-T]",
	"node recovery":      "{info|set-throttle|get-throttle} [-a address] [-p port] [-h] [-P] [-r] [-T] <max> <interval>",
	"node stat":          "[-a address] [-p port] [-r] [-w] [-h] [-T]",
	"node log":           "level [-a address] [-p port] [-h] [-T]",
	"node vnodes":        "set [-a address] [-p port] [-h] <num of vnodes>",
	"node md":            "{info|plug|unplug} [-a address] [-p port] [-r] [-A] [-f] [-h] [-T] [disks]",
	"cluster info":       "[-a address] [-p port] [-r] [-h] [-v] [-T] [-d]",
	"cluster format":     "[-b store] [-c copies] [-l] [-t] [-a address] [-p port] [-h] [-z block_size_shift] [-T] [-V] [-R] [-f] [-F]",
	"cluster shutdown":   "[-a address] [-p port] [-h] [-T]",
	"cluster snapshot":   "{save|list|load|show} [-a address] [-p port] [-h] [-T] [-m] <tag|idx> <path> [vdi1] [vdi2] ...",
	"cluster recover":    "{force|enable|disable} [-a address] [-f] [-p port] [-h] [-T]",
	"cluster reweight":   "[-a address] [-p port] [-h] [-T]",
	"cluster check":      "[-a address] [-p port] [-h] [-T]",
	"cluster alter-copy": "[-a address] [-p port] [-h] [-T] [-c copies] [-f]",
}

var usageOption = regexp.MustCompile(`\[-(.)(?: ([^\]]+))?\]`)

// Every subcommand answers -h, --help and "collie help CMD SUB" with the
// same text on stdout: dog's usage line, its nested subcommands with what
// they do, and every option it takes with dog's help text.
func TestHelpEverySubcommand(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands {
		for i := range c.subs {
			sub := &c.subs[i]
			name := c.name + " " + sub.name
			seen[name] = true
			want, ok := dogUsage[name]
			if !ok {
				t.Errorf("%s: no usage line of dog's to check it against", name)
				continue
			}
			code, out, stderr := runCollie(c.name, sub.name, "-h")
			if code != exitSuccess || stderr != "" {
				t.Errorf("collie %s -h: exit %d, stderr %q", name, code, stderr)
				continue
			}
			for _, argv := range [][]string{{c.name, sub.name, "--help"}, {"help", c.name, sub.name}, {c.name, sub.name, "-a", "127.0.0.1", "-h"}} {
				if code, o, _ := runCollie(argv...); code != exitSuccess || o != out {
					t.Errorf("collie %q: exit %d, output\n%s\ndiffers from -h's\n%s", argv, code, o, out)
				}
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if lines[0] != "Usage: collie "+name+" "+strings.TrimSpace(want) {
				t.Errorf("collie %s -h:\n%s\nwant dog's\nUsage: collie %s %s", name, lines[0], name, want)
			}
			// The options section lists exactly the options of the usage
			// line, in its order, each with its help text.
			var opts []string
			for i, l := range lines {
				if l == "Options:" {
					opts = lines[i+1:]
				}
			}
			var listed []string
			for _, l := range opts {
				if strings.HasPrefix(l, "  -") {
					listed = append(listed, l)
				}
			}
			matches := usageOption.FindAllStringSubmatch(lines[0], -1)
			if len(listed) != len(matches) {
				t.Errorf("collie %s -h lists %d options, its usage line %d:\n%s", name, len(listed), len(matches), out)
				continue
			}
			for i, m := range matches {
				o, _ := c.option(m[1][0])
				head := "  -" + m[1] + ", --" + o.long
				if !strings.HasPrefix(listed[i], head) || o.help == "" || !strings.Contains(listed[i], strings.Split(o.help, "\n")[0]) {
					t.Errorf("collie %s -h: option line %q, want %q and %q", name, listed[i], head, o.help)
				}
				if (m[2] != "") != o.hasArg || o.hasArg && m[2] != o.long {
					t.Errorf("collie %s -h: usage shows %q for option -%s", name, m[0], m[1])
				}
			}
			nested := nestedSubcommands(c.name, sub.name)
			if len(nested) > 0 {
				if !strings.Contains(out, "\nAvailable subcommands:\n") {
					t.Errorf("collie %s -h has no list of subcommands:\n%s", name, out)
				}
				for _, n := range nested {
					if n[1] == "" || !strings.Contains(out, "\n  "+n[0]+strings.Repeat(" ", 24-len(n[0]))+n[1]+"\n") {
						t.Errorf("collie %s -h does not describe its subcommand %s:\n%s", name, n[0], out)
					}
				}
			}
		}
	}
	for name := range dogUsage {
		if !seen[name] {
			t.Errorf("dog's %s is checked but collie has no such command", name)
		}
	}
}

// "collie help" is the top-level usage; "collie help CMD" lists CMD's
// subcommands with what they do; unknown names are usage errors.
func TestHelpCommand(t *testing.T) {
	_, top, _ := runCollie()
	if code, out, _ := runCollie("help"); code != exitSuccess || out != top || !strings.HasPrefix(out, "Sheepdog administrator utility") {
		t.Errorf("collie help: exit %d\n%s", code, out)
	}
	for _, c := range commands {
		code, out, stderr := runCollie("help", c.name)
		if code != exitSuccess || stderr != "" || !strings.HasPrefix(out, "Available "+c.name+" commands:\n") {
			t.Errorf("collie help %s: exit %d, %q %q", c.name, code, out, stderr)
			continue
		}
		var names []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == c.name {
				names = append(names, f[1])
				if s := c.find(f[1]); s == nil || !strings.HasSuffix(l, s.desc) {
					t.Errorf("collie help %s: line %q", c.name, l)
				}
			}
		}
		var want []string
		for _, s := range c.subs {
			want = append(want, s.name)
		}
		if !slices.Equal(names, want) {
			t.Errorf("collie help %s lists %v, want %v", c.name, names, want)
		}
	}
	for _, tc := range []struct {
		argv   []string
		stderr string
	}{
		{[]string{"help", "bogus"}, "Invalid command 'bogus'\n"},
		{[]string{"help", "vdi", "bogus"}, "Invalid command 'vdi bogus'\n"},
	} {
		if code, out, stderr := runCollie(tc.argv...); code != exitUsage || out != "" || !strings.HasPrefix(stderr, tc.stderr) {
			t.Errorf("collie %q: exit %d, %q %q", tc.argv, code, out, stderr)
		}
	}
}
