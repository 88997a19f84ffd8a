package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// optionValue is one option occurrence on the command line.
type optionValue struct {
	opt   option
	value string
}

// parsedArgs is a command line split the way GNU getopt_long (in its
// default, permuting mode) splits dog's: options may stand anywhere, "--"
// ends them, short options cluster ("-Pv", "-c1"), long options take
// "--name=value" or "--name value" and may be abbreviated to any unique
// prefix.
type parsedArgs struct {
	opts []optionValue // in command-line order
	args []string      // positional arguments, in order
}

// parseArgs parses argv (everything after "collie <command> <subcommand>")
// against the allowed options. Errors read like getopt's.
func parseArgs(argv []string, allowed []option) (parsedArgs, error) {
	var p parsedArgs
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "--":
			p.args = append(p.args, argv[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, value, hasValue := strings.Cut(a[2:], "=")
			o, err := findLong(name, allowed)
			if err != nil {
				return p, err
			}
			switch {
			case o.hasArg && !hasValue:
				if i+1 >= len(argv) {
					return p, fmt.Errorf("option '--%s' requires an argument", o.long)
				}
				i++
				value = argv[i]
			case !o.hasArg && hasValue:
				return p, fmt.Errorf("option '--%s' doesn't allow an argument", o.long)
			}
			p.opts = append(p.opts, optionValue{o, value})
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				o, ok := findShort(a[j], allowed)
				if !ok {
					return p, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				if !o.hasArg {
					p.opts = append(p.opts, optionValue{o, ""})
					continue
				}
				value := a[j+1:]
				if value == "" {
					if i+1 >= len(argv) {
						return p, fmt.Errorf("option requires an argument -- '%c'", o.short)
					}
					i++
					value = argv[i]
				}
				p.opts = append(p.opts, optionValue{o, value})
				break
			}
		default: // includes "-" alone
			p.args = append(p.args, a)
		}
	}
	return p, nil
}

func findShort(ch byte, allowed []option) (option, bool) {
	for _, o := range allowed {
		if o.short == ch {
			return o, true
		}
	}
	return option{}, false
}

// findLong resolves a long option name: an exact match, else a unique
// prefix, as getopt_long does.
func findLong(name string, allowed []option) (option, error) {
	var match []option
	for _, o := range allowed {
		if o.long == name {
			return o, nil
		}
		if name != "" && strings.HasPrefix(o.long, name) {
			match = append(match, o)
		}
	}
	switch len(match) {
	case 0:
		return option{}, fmt.Errorf("unrecognized option '--%s'", name)
	case 1:
		return match[0], nil
	}
	return option{}, fmt.Errorf("option '--%s' is ambiguous", name)
}

// has reports whether option ch was given.
func (p parsedArgs) has(ch byte) bool {
	for _, v := range p.opts {
		if v.opt.short == ch {
			return true
		}
	}
	return false
}

// cliArgs renders the parsed line for urfave/cli, which stops parsing flags
// at the first positional argument: every option first, in canonical
// "--long" / "--long=value" form, then "--", then the positional arguments.
func (p parsedArgs) cliArgs() []string {
	out := make([]string, 0, len(p.opts)+1+len(p.args))
	for _, v := range p.opts {
		if v.opt.hasArg {
			out = append(out, "--"+v.opt.long+"="+v.value)
		} else {
			out = append(out, "--"+v.opt.long)
		}
	}
	out = append(out, "--")
	return append(out, p.args...)
}

// splitLeadingGlobals lets global options stand before the command name
// ("collie -p 7001 vdi list"): it moves them behind the subcommand name.
// Unknown leading options are left in place (and then rejected as an
// invalid command).
func splitLeadingGlobals(argv []string) []string {
	var lead []string
	i := 0
	for i < len(argv) && len(argv[i]) > 1 && argv[i][0] == '-' && argv[i] != "--" {
		a := argv[i]
		var o option
		var err error
		var ok bool
		if strings.HasPrefix(a, "--") {
			name, _, hasValue := strings.Cut(a[2:], "=")
			o, err = findLong(name, globalOptions)
			ok = err == nil
			if ok && o.hasArg && !hasValue {
				if i+1 >= len(argv) {
					break
				}
				lead = append(lead, a, argv[i+1])
				i += 2
				continue
			}
		} else if len(a) == 2 {
			o, ok = findShort(a[1], globalOptions)
			if ok && o.hasArg {
				if i+1 >= len(argv) {
					break
				}
				lead = append(lead, a, argv[i+1])
				i += 2
				continue
			}
		} else {
			o, ok = findShort(a[1], globalOptions)
		}
		if !ok || o.short == 'h' {
			break
		}
		lead = append(lead, a)
		i++
	}
	if len(lead) == 0 || len(argv)-i < 2 {
		return argv
	}
	out := append([]string{}, argv[i:i+2]...)
	out = append(out, lead...)
	return append(out, argv[i+2:]...)
}

// parseSize is dog's option_parse_size: a decimal number (fractions
// allowed) with an optional one-letter binary suffix B, K, M, G, T or P
// (either case). A bare number is bytes.
func parseSize(v string) (uint64, bool) {
	s := strings.TrimLeft(v, " \t\n\v\f\r")
	end := 0
	if end < len(s) && (s[end] == '+' || s[end] == '-') {
		end++
	}
	digits := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end, digits = end+1, digits+1
	}
	if end < len(s) && s[end] == '.' {
		end++
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end, digits = end+1, digits+1
		}
	}
	if digits > 0 && end < len(s) && (s[end] == 'e' || s[end] == 'E') {
		e := end + 1
		if e < len(s) && (s[e] == '+' || s[e] == '-') {
			e++
		}
		if e < len(s) && s[e] >= '0' && s[e] <= '9' {
			for e < len(s) && s[e] >= '0' && s[e] <= '9' {
				e++
			}
			end = e
		}
	}
	f := 0.0
	postfix := v
	if digits > 0 {
		var err error
		if f, err = strconv.ParseFloat(s[:end], 64); err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		postfix = s[end:]
	}
	if len(postfix) > 1 || f < 0 {
		return 0, false
	}
	mult := 1.0
	if postfix != "" {
		i := strings.IndexByte("BKMGTP", byte(unicode.ToUpper(rune(postfix[0]))))
		if i < 0 {
			return 0, false
		}
		mult = math.Pow(1024, float64(i))
	}
	f *= mult
	if f >= math.MaxUint64 {
		return 0, false
	}
	return uint64(f), true
}

// sizeArg parses a size argument, failing like dog (exit 64 with usage).
func sizeArg(v string) (uint64, error) {
	n, ok := parseSize(v)
	if !ok {
		return 0, usagef("Invalid size '%s' (you may use B, K, M, G, T or P suffixes for "+
			"bytes, kilobytes, megabytes, gigabytes, terabytes and petabytes)", v)
	}
	return n, nil
}
