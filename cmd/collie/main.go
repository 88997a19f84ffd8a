// Command collie is the Sheepdog administrator utility: a command-for-command,
// output-compatible re-implementation of Sheepdog's dog (formerly collie)
// over the native protocol (docs/protocol.md §8).
//
//	collie <command> <subcommand> [options] [args]
//
// Options may stand anywhere on the line, as with dog's getopt; the line is
// parsed getopt-style (args.go) and handed to urfave/cli in canonical
// flags-first form.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	programName = "collie"
	version     = "1.0.1-go"
)

// Exit codes (dog's exits.h).
const (
	exitSuccess = 0
	exitFailure = 1 // the command failed
	exitSysfail = 2 // something is wrong with the cluster or the local host
	exitExists  = 3 // the object already exists
	exitFull    = 4 // no space left
	exitMissing = 5 // the object does not exist
	exitUsage   = 64
)

// exitError ends the command with an exit code; msg (if any) is printed to
// stderr as one line, and usage adds the subcommand's usage text.
type exitError struct {
	code  int
	msg   string
	usage bool
}

func (e *exitError) Error() string { return e.msg }

func failf(code int, format string, a ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, a...)}
}

func usagef(format string, a ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, a...), usage: true}
}

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes one collie command line and returns the exit code.
func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	argv = append([]string{argv[0]}, splitLeadingGlobals(argv[1:])...)
	if len(argv) < 2 {
		printUsage(stdout)
		return exitSuccess
	}
	cmd := findCommand(argv[1])
	if cmd == nil {
		switch argv[1] {
		case "help":
			return help(argv[2:], stdout, stderr)
		case "--help", "-h":
			printUsage(stdout)
			return exitSuccess
		}
		fmt.Fprintf(stderr, "Invalid command '%s'\n", argv[1])
		fmt.Fprintf(stderr, "Try '%s --help' for more information.\n", programName)
		return exitUsage
	}
	var sub *subcommand
	if len(argv) > 2 {
		sub = cmd.find(argv[2])
	}
	if sub == nil {
		if len(argv) > 2 && argv[2] != "help" && argv[2] != "--help" && argv[2] != "-h" {
			fmt.Fprintf(stderr, "Invalid command '%s %s'\n", argv[1], argv[2])
		}
		fmt.Fprintf(stderr, "Available %s commands:\n", cmd.name)
		for _, s := range cmd.subs {
			fmt.Fprintf(stderr, "  %s %s\n", cmd.name, s.name)
		}
		return exitUsage
	}
	p, err := parseArgs(argv[3:], cmd.allowed(sub))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", programName, err)
		fmt.Fprintf(stderr, "Try '%s --help' for more information.\n", programName)
		return exitUsage
	}
	if p.has('h') {
		printSubUsage(stdout, cmd, sub)
		return exitSuccess
	}

	out := bufio.NewWriterSize(stdout, 64<<10)
	app := newApp(func(c *cli.Context) error {
		start := time.Now()
		s, err := newSession(c, stdin, out, stderr)
		if err != nil {
			return err
		}
		s.stdoutTTY = isTerminal(stdout)
		defer s.close()
		if sub.needArg && len(s.args) == 0 {
			return &exitError{code: exitUsage, usage: true}
		}
		if sub.needNodes {
			if err := s.updateNodeList(); err != nil {
				return err
			}
		}
		err = sub.run(s, s.args)
		var ee *exitError
		if s.opts.elapsed && !(errors.As(err, &ee) && ee.usage) {
			fmt.Fprintf(out, "\nElapsed time: %.3f seconds\n", time.Since(start).Seconds())
		}
		return err
	})
	app.Writer, app.ErrWriter = stderr, stderr
	runErr := app.Run(append([]string{programName, cmd.name, sub.name}, p.cliArgs()...))
	if err := out.Flush(); err != nil && runErr == nil {
		runErr = failf(exitSysfail, "Failed to write to stdout: %v", err)
	}
	return report(runErr, stderr, cmd, sub)
}

// report prints err and returns its exit code.
func report(err error, stderr io.Writer, cmd *command, sub *subcommand) int {
	if err == nil {
		return exitSuccess
	}
	var e *exitError
	if !errors.As(err, &e) {
		e = &exitError{code: exitFailure, msg: err.Error()}
		if errors.Is(err, context.Canceled) {
			e.code = exitSysfail
		}
	}
	if e.msg != "" {
		fmt.Fprintln(stderr, strings.TrimRight(e.msg, "\n"))
	}
	// Bad input gets one clear line; the full usage only when the line
	// itself was malformed (no message of its own).
	if e.usage && e.msg == "" {
		printSubUsage(stderr, cmd, sub)
	}
	return e.code
}

// newApp builds the urfave/cli command tree from the command table. Every
// subcommand runs action; flags come from the subcommand's option string.
func newApp(action cli.ActionFunc) *cli.App {
	app := &cli.App{
		Name:            programName,
		Usage:           "Sheepdog administrator utility",
		Version:         version,
		HideHelp:        true,
		HideVersion:     true,
		ExitErrHandler:  func(*cli.Context, error) {},
		CommandNotFound: func(*cli.Context, string) {},
	}
	for _, c := range commands {
		cc := &cli.Command{Name: c.name, HideHelp: true}
		for i := range c.subs {
			sub := &c.subs[i]
			sc := &cli.Command{
				Name:     sub.name,
				Usage:    sub.desc,
				HideHelp: true,
				Action:   action,
				OnUsageError: func(_ *cli.Context, err error, _ bool) error {
					return usagef("%v", err)
				},
			}
			for _, o := range c.allowed(sub) {
				sc.Flags = append(sc.Flags, cliFlag(o))
			}
			cc.Subcommands = append(cc.Subcommands, sc)
		}
		app.Commands = append(app.Commands, cc)
	}
	return app
}

func cliFlag(o option) cli.Flag {
	aliases := []string{string(o.short)}
	help := strings.Join(strings.Fields(o.help), " ")
	if !o.hasArg {
		return &cli.BoolFlag{Name: o.long, Aliases: aliases, Usage: help}
	}
	f := &cli.StringFlag{Name: o.long, Aliases: aliases, Usage: help}
	switch o.short {
	case 'a':
		f.EnvVars = []string{"SHEEPDOG_DOG_ADDR"}
	case 'p':
		f.EnvVars = []string{"SHEEPDOG_DOG_PORT"}
	}
	return f
}

// printUsage is the top-level help, in dog's layout.
func printUsage(w io.Writer) {
	fmt.Fprintf(w, "Sheepdog administrator utility (version %s)\n", version)
	fmt.Fprintf(w, "Usage: %s <command> <subcommand> [options]\n", programName)
	fmt.Fprintf(w, "\nAvailable commands:\n")
	for _, c := range commands {
		for _, s := range c.subs {
			fmt.Fprintf(w, "  %-24s%s\n", c.name+" "+s.name, s.desc)
		}
	}
	fmt.Fprintf(w, "\nFor more information, run '%s <command> <subcommand> --help'.\n", programName)
}

// printSubUsage is "collie <command> <subcommand> --help", in dog's layout.
func printSubUsage(w io.Writer, cmd *command, sub *subcommand) {
	fmt.Fprintf(w, "Usage: %s %s %s", programName, cmd.name, sub.name)
	nested := nestedSubcommands(cmd.name, sub.name)
	switch len(nested) {
	case 0:
	case 1:
		fmt.Fprintf(w, " %s", nested[0][0])
	default:
		names := make([]string, len(nested))
		for i, n := range nested {
			names[i] = n[0]
		}
		fmt.Fprintf(w, " {%s}", strings.Join(names, "|"))
	}
	opts := cmd.allowed(sub)
	for _, o := range opts {
		if o.hasArg {
			fmt.Fprintf(w, " [-%c %s]", o.short, o.long)
		} else {
			fmt.Fprintf(w, " [-%c]", o.short)
		}
	}
	if sub.args != "" {
		fmt.Fprintf(w, " %s", sub.args)
	}
	fmt.Fprintf(w, "\n")
	if len(nested) > 0 {
		fmt.Fprintf(w, "Available subcommands:\n")
		for _, n := range nested {
			fmt.Fprintf(w, "  %-24s%s\n", n[0], n[1])
		}
	}
	fmt.Fprintf(w, "Options:\n")
	for _, o := range opts {
		fmt.Fprintf(w, "  %-24s%s\n", fmt.Sprintf("-%c, --%s", o.short, o.long), o.help)
	}
}
