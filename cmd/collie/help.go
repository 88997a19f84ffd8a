package main

import (
	"fmt"
	"io"
)

// Help text as dog prints it: "collie" (the top-level usage), "collie
// COMMAND SUBCOMMAND -h" (printSubUsage) and, ours, "collie help
// [COMMAND [SUBCOMMAND]]", which prints the same texts on stdout. dog
// answers "dog help COMMAND" with the top-level usage; here it lists the
// command's subcommands with what they do.

// nestedHelp holds the {name, description} of the subcommands of dog's
// subcommands that have their own (dog's node_recovery_cmd, node_log_cmd,
// node_vnodes_cmd, cluster_recover_cmd, cluster_snapshot_cmd), in dog's
// order and words. vdi object, lock and cache and node md keep theirs next to
// their code.
var nestedHelp = map[string][][2]string{
	"node recovery": {
		{"info", "show recovery information of nodes (default)"},
		{"set-throttle", "set new throttling"},
		{"get-throttle", "get current throttling"},
	},
	"node log": {
		{"level", "manipulate loglevel"},
	},
	"node vnodes": {
		{"set", "set new vnodes"},
	},
	"cluster recover": {
		{"force", "force recover cluster immediately"},
		{"enable", "enable automatic recovery and run once recover if necessary"},
		{"disable", "disable automatic recovery"},
	},
	"cluster snapshot": {
		{"save", "save snapshot to localpath"},
		{"list", "list snapshot of localpath"},
		{"load", "load snapshot from localpath"},
		{"show", "show vdi list from snapshot"},
	},
}

// nestedSubcommands lists the {name, description} of a subcommand's own
// subcommands, for its usage text.
func nestedSubcommands(cmd, sub string) [][2]string {
	var out [][2]string
	switch cmd + " " + sub {
	case "vdi object":
		for _, n := range objectSubcommands {
			out = append(out, [2]string{n.name, n.desc})
		}
	case "vdi lock":
		for _, n := range lockSubcommands {
			out = append(out, [2]string{n.name, n.desc})
		}
	case "vdi cache":
		for _, n := range cacheSubcommands {
			out = append(out, [2]string{n.name, n.desc})
		}
	case "node md":
		for _, n := range mdSubcommands {
			out = append(out, [2]string{n.name, n.desc})
		}
	default:
		out = nestedHelp[cmd+" "+sub]
	}
	return out
}

// help is "collie help [COMMAND [SUBCOMMAND]]": the top-level usage, a
// command's subcommands, or a subcommand's usage, on stdout. An unknown
// name is a usage error, as dog reports an unknown command.
func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stdout)
		return exitSuccess
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		fmt.Fprintf(stderr, "Invalid command '%s'\n", args[0])
		fmt.Fprintf(stderr, "Try '%s --help' for more information.\n", programName)
		return exitUsage
	}
	if len(args) == 1 {
		fmt.Fprintf(stdout, "Available %s commands:\n", cmd.name)
		for _, s := range cmd.subs {
			fmt.Fprintf(stdout, "  %-24s%s\n", cmd.name+" "+s.name, s.desc)
		}
		fmt.Fprintf(stdout, "\nFor more information, run '%s help %s <subcommand>'.\n", programName, cmd.name)
		return exitSuccess
	}
	sub := cmd.find(args[1])
	if sub == nil {
		fmt.Fprintf(stderr, "Invalid command '%s %s'\n", cmd.name, args[1])
		fmt.Fprintf(stderr, "Try '%s help %s' for more information.\n", programName, cmd.name)
		return exitUsage
	}
	printSubUsage(stdout, cmd, sub)
	return exitSuccess
}
