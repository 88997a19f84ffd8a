package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/store"
)

// version is the Sheepdog version this sheep speaks for (as collie's).
const version = "1.0.1-go"

// usageError is a bad command line. main prints it as it is, with no
// "sheep:" prefix, as Sheepdog's sheep prints its option errors (its
// functional tests compare these lines).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// sheepdogFlags are Sheepdog 1.0's sheep options this sheep accepts for
// compatibility (sheep.c's option table). Those with no meaning here are
// parsed and named in a warning at start (ignoredOptions).
var sheepdogFlags = []cli.Flag{
	&cli.StringFlag{Name: "cluster", Aliases: []string{"c"}, Usage: "cluster driver: local[:DIR] (sheeps on this host find each other through DIR, default " + defaultLocalDir + "); without -c, peers are given with --join"},
	&cli.BoolFlag{Name: "version", Aliases: []string{"v"}, Usage: "show the version"},
	&cli.StringFlag{Name: "pidfile", Aliases: []string{"P"}, Usage: "write the daemon's pid to FILE (removed at exit)"},
	&cli.StringFlag{Name: "recovery", Aliases: []string{"R"}, Usage: "recovery throttle: max=N,interval=MS (at most N objects per interval)"},
	&cli.IntFlag{Name: "gossip-port", Usage: "gossip port, TCP and UDP (default: port+10000, or port-10000 above 55535)"},
	&cli.IntFlag{Name: "raft-port", Usage: "raft port (default: port+20000, or port-20000 above 45535)"},
	&cli.StringFlag{Name: "journal", Usage: "Sheepdog's journal options (dir=,size=,skip): accepted, no meaning here (-j with these options too)"},
	&cli.BoolFlag{Name: "directio", Aliases: []string{"D"}, Usage: "direct IO for the backend store: every object write that can (aligned, 64 KiB or more) skips the page cache, overwrites too (--direct=all); by default only first writes do; reads still go through the page cache"},
	&cli.StringFlag{Name: "ioaddr", Aliases: []string{"i"}, Usage: "IO NIC: host=ADDR[,port=PORT] (default port 7000): peers send object I/O there, and fall back to the main address when it fails"},
	&cli.BoolFlag{Name: "upgrade", Aliases: []string{"u"}, Usage: "Sheepdog's data layout upgrade: accepted, no meaning here"},
	&cli.BoolFlag{Name: "wildcard-recovery", Aliases: []string{"W"}, Usage: "Sheepdog's wildcard recovery: accepted, no meaning here"},
	&cli.StringFlag{Name: "wq-threads", Aliases: []string{"w"}, Usage: "object cache: size=SIZE[,dir=PATH][,directio] (Sheepdog 0.x's -w; dir defaults to DIR/cache); any other value is Sheepdog 1.0's work queue threads, accepted with no meaning here"},
	&cli.StringFlag{Name: "max-dynamic-threads", Aliases: []string{"x"}, Usage: "Sheepdog's dynamic threads: accepted, no meaning here"},
	&cli.StringFlag{Name: "http", Aliases: []string{"r"}, Usage: "Sheepdog's HTTP/Swift service: accepted, not served"},
}

// ignoredOptions lists the Sheepdog options set on this command line that
// have no meaning for this sheep, for the warning at start.
func ignoredOptions(c *cli.Context) []string {
	var out []string
	for _, f := range []struct{ name, short string }{
		{"journal", "j"}, {"upgrade", "u"},
		{"wildcard-recovery", "W"}, {"wq-threads", "w"}, {"max-dynamic-threads", "x"}, {"http", "r"},
	} {
		if c.IsSet(f.name) && !(f.short == "w" && isCacheOptions(c.String(f.name))) { // -w size=: the object cache (cache.go)
			out = append(out, "-"+f.short+"/--"+f.name)
		}
	}
	if isJournalOptions(c.String("join")) {
		out = append(out, "-j (journal)")
	}
	return out
}

// isJournalOptions reports whether a -j value is Sheepdog's journal
// options (dir=, size=, skip) rather than addresses to join.
func isJournalOptions(v string) bool {
	if v == "" {
		return false
	}
	for _, kv := range strings.Split(v, ",") {
		if !strings.HasPrefix(kv, "dir=") && !strings.HasPrefix(kv, "size=") && kv != "skip" {
			return false
		}
	}
	return true
}

// reorderArgs moves every option of args (args[0] is the program) before
// the positional arguments, so that flags may follow the store dir as
// Sheepdog's getopt allows (urfave/cli stops at the first positional
// argument). An option that takes a value keeps the next argument as its
// value whatever it looks like ("-p -1" is port "-1", refused later with
// Sheepdog's message); after "--" everything is positional. Grouped short
// options ("-fn") and attached values ("-p7001") are split as getopt
// does. takesValue maps every option name (without dashes) to whether it
// takes a value; unknown names are left for the parser to refuse.
func reorderArgs(args []string, takesValue map[string]bool) []string {
	if len(args) == 0 {
		return args
	}
	flags := []string{args[0]}
	var pos []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) < 2 || a[0] != '-':
			pos = append(pos, a)
		default:
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				flags = append(flags, a)
				continue
			}
			valued, known := takesValue[name]
			if !known && a[1] != '-' {
				if split := splitShort(name, takesValue); split != nil {
					flags = append(flags, split...)
					if last := split[len(split)-1]; takesValue[last[1:]] && i+1 < len(args) {
						i++
						flags = append(flags, args[i])
					}
					continue
				}
			}
			flags = append(flags, a)
			if valued && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if len(pos) > 0 {
		flags = append(flags, "--")
	}
	return append(flags, pos...)
}

// splitShort splits a group of short options as getopt reads it: "fn" is
// -f -n, "p7001" is -p 7001, "fp7001" is -f -p 7001. It returns nil when
// the group is not made of known one-letter options. A group ending in an
// option that takes a value ends with that option alone (its value is the
// next argument).
func splitShort(group string, takesValue map[string]bool) []string {
	var out []string
	for i := 0; i < len(group); i++ {
		valued, ok := takesValue[group[i:i+1]]
		if !ok {
			return nil
		}
		out = append(out, "-"+group[i:i+1])
		if valued {
			if rest := group[i+1:]; rest != "" {
				out = append(out, rest)
			}
			return out
		}
	}
	return out
}

// flagArity maps every name and alias of flags to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": false, "h": false}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	return m
}

// parseU32 reads an unsigned decimal as Sheepdog's str_to_u32 does
// (strtoll: leading blanks and a sign allowed, nothing after the digits).
func parseU32(s string) (uint32, bool) {
	n, err := strconv.ParseInt(strings.TrimLeft(s, " \t\n\v\f\r"), 10, 64)
	if err != nil || n < 0 || n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// directMode is --direct (name; set says it was given), or all for
// Sheepdog's -D (dashD).
func directMode(name string, set, dashD bool) (store.DirectMode, error) {
	m, err := store.ParseDirectMode(name)
	if err != nil {
		return 0, usagef("Invalid --direct '%s': fresh, all or off", name)
	}
	if dashD {
		if set && m != store.DirectAll {
			return 0, usagef("Options '-D' and '--direct=%s' can not be both specified", m)
		}
		m = store.DirectAll
	}
	return m, nil
}

// sheepdogOptions checks -p, -z, -V, -g and -R as Sheepdog's sheep does,
// with its messages, and fills cfg.
func sheepdogOptions(c *cli.Context, cfg *Config) error {
	p := c.String("port")
	port, ok := parseU32(p)
	if !ok || port < 1 || port > 65535 {
		return usagef("Invalid port number '%s'", p)
	}
	cfg.Port = int(port)
	cfg.Zone = -1
	if c.IsSet("zone") {
		z := c.String("zone")
		zone, ok := parseU32(z)
		if !ok {
			return usagef("Invalid zone id '%s': must be an integer between 0 and 4294967295", z)
		}
		cfg.Zone = int64(zone)
	}
	if c.IsSet("vnodes") {
		if c.Bool("gateway") {
			return usagef("Options '-g' and '-V' can not be both specified")
		}
		v := c.String("vnodes")
		n, ok := parseU32(v)
		if !ok || n < 1 || n > 65535 {
			return usagef("Invalid number of vnodes '%s': must be an integer between 1 and 65535", v)
		}
		cfg.Vnodes = int(n)
	}
	if y := c.String("myaddr"); y != "" {
		if _, err := netip.ParseAddr(y); err != nil {
			return usagef("Invalid address: '%s'", y)
		}
	}
	for _, name := range []string{"gossip-port", "raft-port"} {
		if v := c.Int(name); c.IsSet(name) && (v < 1 || v > 65535) {
			return usagef("Invalid %s number '%d'", strings.ReplaceAll(name, "-", " "), v)
		}
	}
	cfg.GossipPort, cfg.RaftPort = c.Int("gossip-port"), c.Int("raft-port")
	if v := c.String("recovery"); v != "" {
		t, err := parseRecovery(v)
		if err != nil {
			return err
		}
		cfg.Throttle = &t
	}
	if v := c.String("ioaddr"); v != "" {
		io, err := parseIOAddr(v)
		if err != nil {
			return err
		}
		cfg.IOAddr = io
	}
	if v := c.String("max-dynamic-threads"); v != "" {
		if n, ok := parseU32(v); !ok || n < 1 {
			return usagef("Invalid number of threads '%s': must be an integer between 1 and 4294967295", v)
		}
	}
	return nil
}

// parseIOAddr reads -i host=ADDR[,port=PORT] as Sheepdog's sheep does
// (its port defaults to 7000, SD_LISTEN_PORT, whatever -p says).
func parseIOAddr(v string) (netip.AddrPort, error) {
	host, port := "", "7000"
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "host":
			host = val
		case "port":
			port = val
		default:
			return netip.AddrPort{}, usagef("Invalid IO NIC option '%s': host=ADDR[,port=PORT]", kv)
		}
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, usagef("Bad addr: '%s'", host)
	}
	n, ok := parseU32(port)
	if !ok || n < 1 || n > 65535 {
		return netip.AddrPort{}, usagef("Bad port '%s'", port)
	}
	return netip.AddrPortFrom(addr, uint16(n)), nil
}

// parseRecovery reads -R max=N,interval=MS. As in Sheepdog, the throttle
// applies only when both are positive.
func parseRecovery(v string) (recovery.Throttle, error) {
	var t recovery.Throttle
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(val, 10, 32)
		switch {
		case k == "max" && err == nil:
			t.Max = uint32(n)
		case k == "interval" && err == nil:
			t.Interval = time.Duration(n) * time.Millisecond
		default:
			return t, usagef("Invalid recovery option '%s' (max=N,interval=MS)", kv)
		}
	}
	if t.Max == 0 || t.Interval == 0 {
		return recovery.Throttle{}, nil
	}
	return t, nil
}

// warnIgnored logs, at start, the options accepted for compatibility that
// change nothing here.
func warnIgnored(log *slog.Logger, ignored []string) {
	if len(ignored) > 0 {
		log.Warn("Sheepdog options accepted with no meaning for this sheep", "options", strings.Join(ignored, " "))
	}
}
