package main

import (
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// snapOptions are the vdi options of the snapshot, attribute, object and
// backup commands, decoded as dog's vdi_parser does.
type snapOptions struct {
	index     uint64 // -i; noIndex when not given
	exclusive bool   // -x
	delete    bool   // -d
	exist     bool   // -e
	hyper     bool   // -y
	fromID    uint32 // -F as a number
	fromTag   string // -F as a tag
	force     bool   // -f (vdi rollback)
}

// noIndex is dog's "no -i" value (~0).
const noIndex = ^uint64(0)

func parseSnapOptions(c *cli.Context, o *snapOptions) error {
	o.index = noIndex
	o.exclusive, o.delete, o.exist, o.hyper = c.Bool("exclusive"), c.Bool("delete"), c.Bool("exist"), c.Bool("hyper")
	if c.IsSet("index") {
		v, ok := parseIndex(c.String("index"))
		if !ok {
			return failf(exitFailure, "The index must be a decimal integer or a hexadecimal integer started with 0x")
		}
		o.index = v
	}
	if c.IsSet("from") {
		v := c.String("from")
		if id, err := strconv.ParseInt(strings.TrimLeft(v, " \t\n\v\f\r"), 10, 64); err == nil {
			o.fromID = uint32(id)
		} else {
			o.fromTag = v
		}
	}
	return nil
}

// parseIndex is strtol(opt, &p, 16) for "0x..." and strtol(opt, &p, 10)
// otherwise: leading blanks and a sign are accepted, parsing stops at the
// first character that is not a digit, and only "no digits at all" is an
// error. A negative index wraps like C's conversion to uint64_t.
func parseIndex(v string) (uint64, bool) {
	base := 10
	s := v
	if strings.HasPrefix(v, "0x") {
		base = 16
		s = v[2:]
	} else {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
	}
	neg := false
	if base == 10 && s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	digits := "0123456789"
	if base == 16 {
		digits += "abcdefABCDEF"
	}
	n := 0
	for n < len(s) && strings.IndexByte(digits, s[n]) >= 0 {
		n++
	}
	if n == 0 {
		if base == 16 {
			return 0, true // strtol parsed the "0" of "0x"
		}
		return 0, false
	}
	u, err := strconv.ParseUint(s[:n], base, 64)
	if err != nil || u > 1<<63-1 {
		u = 1<<63 - 1 // strtol saturates at LONG_MAX
	}
	if neg {
		u = -u
	}
	return u, true
}
