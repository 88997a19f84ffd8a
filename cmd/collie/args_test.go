package main

import (
	"bytes"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

func vdiAllowed(t *testing.T, sub string) []option {
	t.Helper()
	c := findCommand("vdi")
	return c.allowed(c.find(sub))
}

func TestParseArgsReorders(t *testing.T) {
	read := vdiAllowed(t, "read")
	create := vdiAllowed(t, "create")
	for _, tc := range []struct {
		name    string
		allowed []option
		argv    []string
		want    []string // cliArgs()
	}{
		{"options first", read, []string{"-s", "1", "Alice"}, []string{"--snapshot=1", "--", "Alice"}},
		{"options last", read, []string{"Alice", "-s", "1"}, []string{"--snapshot=1", "--", "Alice"}},
		{"options between", read, []string{"Alice", "-s", "snap", "0", "512", "-p", "7001"},
			[]string{"--snapshot=snap", "--port=7001", "--", "Alice", "0", "512"}},
		{"attached value", read, []string{"-s1", "Alice"}, []string{"--snapshot=1", "--", "Alice"}},
		{"long with =", read, []string{"Alice", "--snapshot=s1"}, []string{"--snapshot=s1", "--", "Alice"}},
		{"long with space", read, []string{"--snapshot", "s1", "Alice"}, []string{"--snapshot=s1", "--", "Alice"}},
		{"long prefix", read, []string{"--snap", "s1", "--addr=10.0.0.1", "Alice"},
			[]string{"--snapshot=s1", "--address=10.0.0.1", "--", "Alice"}},
		{"clustered flags", create, []string{"-Pv", "Pre", "8M", "-c2"},
			[]string{"--prealloc", "--verbose", "--copies=2", "--", "Pre", "8M"}},
		{"cluster ending in value", create, []string{"-Pc", "3", "Pre", "8M"},
			[]string{"--prealloc", "--copies=3", "--", "Pre", "8M"}},
		{"double dash ends options", read, []string{"-s", "1", "--", "-odd", "-s"}, []string{"--snapshot=1", "--", "-odd", "-s"}},
		{"dash alone is an argument", read, []string{"Alice", "-"}, []string{"--", "Alice", "-"}},
		{"value looking like an option", read, []string{"-s", "-x", "Alice"}, []string{"--snapshot=-x", "--", "Alice"}},
		{"repeated option keeps order", read, []string{"-s", "1", "Alice", "-s", "2"}, []string{"--snapshot=1", "--snapshot=2", "--", "Alice"}},
	} {
		p, err := parseArgs(tc.argv, tc.allowed)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := p.cliArgs(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: cliArgs = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	read := vdiAllowed(t, "read")
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"-x", "Alice"}, "invalid option -- 'x'"},
		{[]string{"-P", "Alice"}, "invalid option -- 'P'"}, // not a read option
		{[]string{"Alice", "-s"}, "option requires an argument -- 's'"},
		{[]string{"Alice", "--snapshot"}, "option '--snapshot' requires an argument"},
		{[]string{"--bogus", "Alice"}, "unrecognized option '--bogus'"},
	} {
		_, err := parseArgs(tc.argv, read)
		if err == nil || err.Error() != tc.want {
			t.Errorf("parseArgs(%q) = %v, want %q", tc.argv, err, tc.want)
		}
	}
	list := findCommand("vdi").allowed(findCommand("vdi").find("list"))
	if _, err := parseArgs([]string{"--r"}, list); err != nil {
		t.Errorf("--r should resolve to --raw: %v", err)
	}
	if _, err := parseArgs([]string{"--raw=1"}, list); err == nil || err.Error() != "option '--raw' doesn't allow an argument" {
		t.Errorf("--raw=1: %v", err)
	}
	cl := findCommand("cluster")
	format := cl.allowed(cl.find("format"))
	if _, err := parseArgs([]string{"--f"}, format); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("--f among --force/--fixedvnodes: %v", err)
	}
}

func TestSplitLeadingGlobals(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-p", "7001", "vdi", "list"}, []string{"vdi", "list", "-p", "7001"}},
		{[]string{"--port=7001", "-r", "vdi", "list", "x"}, []string{"vdi", "list", "--port=7001", "-r", "x"}},
		{[]string{"vdi", "list", "-p", "7001"}, []string{"vdi", "list", "-p", "7001"}},
		{[]string{"-h"}, []string{"-h"}},
		{[]string{"-x", "vdi", "list"}, []string{"-x", "vdi", "list"}},
	} {
		if got := splitLeadingGlobals(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitLeadingGlobals(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"512", 512, true}, {"64M", 64 << 20, true}, {"64m", 64 << 20, true},
		{"1K", 1024, true}, {"2G", 2 << 30, true}, {"4T", 4 << 40, true}, {"1P", 1 << 50, true},
		{"100B", 100, true}, {"1.5G", 3 << 29, true}, {"1048576", 1 << 20, true},
		{"1X", 0, false}, {"1MB", 0, false}, {"abc", 0, false}, {"-1", 0, false}, {"", 0, true},
	} {
		got, ok := parseSize(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseCopies(t *testing.T) {
	for _, tc := range []struct {
		in             string
		copies, policy uint8
		ok             bool
	}{
		{"1", 1, 0, true}, {"3", 3, 0, true}, {"31", 31, 0, true}, {"32", 0, 0, false}, {"0", 0, 0, false},
		{"4:2", 6, 0x22, true}, {"2:1", 3, 0x11, true}, {"16:15", 31, 0x8f, true},
		{"3:1", 0, 0, false}, {"4:0", 0, 0, false}, {"4:16", 0, 0, false}, {"x", 0, 0, false}, {"-1", 0, 0, false},
	} {
		c, p, ok := parseCopies(tc.in)
		if ok != tc.ok || c != tc.copies || p != tc.policy {
			t.Errorf("parseCopies(%q) = %d, %#x, %v; want %d, %#x, %v", tc.in, c, p, ok, tc.copies, tc.policy, tc.ok)
		}
	}
}

func runCollie(argv ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(append([]string{"collie"}, argv...), strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestRunUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		argv   []string
		code   int
		stderr string // prefix
	}{
		{nil, exitSuccess, ""},
		{[]string{"bogus"}, exitUsage, "Invalid command 'bogus'\n"},
		{[]string{"vdi"}, exitUsage, "Available vdi commands:\n"},
		{[]string{"vdi", "bogus"}, exitUsage, "Invalid command 'vdi bogus'\n"},
		{[]string{"vdi", "create"}, exitUsage, "Usage: collie vdi create "},
		{[]string{"vdi", "read", "-x", "Alice"}, exitUsage, "collie: invalid option -- 'x'\n"},
		{[]string{"vdi", "read", "Alice", "-s", "0"}, exitFailure, "The snapshot id must be larger than zero\n"},
		{[]string{"vdi", "create", "-c", "5:3", "A", "1G"}, exitFailure, "Invalid parameter 5:3"},
		{[]string{"node", "list", "-p", "0"}, exitUsage, "Invalid port number '0'\n"},
		{[]string{"vdi", "list", "-h"}, exitSuccess, ""},
	} {
		code, _, stderr := runCollie(tc.argv...)
		if code != tc.code || !strings.HasPrefix(stderr, tc.stderr) {
			t.Errorf("collie %q: exit %d, stderr %q; want exit %d, stderr %q...", tc.argv, code, stderr, tc.code, tc.stderr)
		}
	}
}

func TestRunCannotConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	code, _, stderr := runCollie("vdi", "list", "-p", port)
	want := "failed to connect to 127.0.0.1:" + port + ": Connection refused\n"
	if code != exitSysfail || stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 2, %q", code, stderr, want)
	}
}

// fakeSheep answers every GET_VDI_INFO with NO_VDI and records the VDI
// names asked for.
func fakeSheep(t *testing.T) (port string, names chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	names = make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hb [proto.HeaderSize]byte
				for {
					if _, err := io.ReadFull(c, hb[:]); err != nil {
						return
					}
					var req proto.Request
					req.Unmarshal(hb[:])
					data := make([]byte, 0)
					if req.Flags&proto.FlagCmdWrite != 0 {
						data = make([]byte, req.DataLength)
						if _, err := io.ReadFull(c, data); err != nil {
							return
						}
					}
					rsp := proto.Response{Opcode: req.Opcode, ID: req.ID, Result: proto.ResInvalidParms}
					if req.Opcode == proto.OpGetVdiInfo {
						name, tag, _ := proto.ParseVdiName(data)
						names <- name + "|" + tag + "|" + strconv.Itoa(int(req.Vdi().SnapID))
						rsp.Result = proto.ResNoVdi
					}
					rsp.Marshal(hb[:])
					if _, err := c.Write(hb[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), names
}

func TestRunOptionsAnywhere(t *testing.T) {
	port, names := fakeSheep(t)
	for _, argv := range [][]string{
		{"vdi", "read", "-s", "snap1", "-p", port, "Nope", "0", "512"},
		{"vdi", "read", "Nope", "0", "512", "-s", "snap1", "-p", port},
		{"vdi", "read", "Nope", "-p" + port, "0", "--snapshot=snap1", "512"},
		{"-p", port, "vdi", "read", "Nope", "--snapshot", "snap1"},
	} {
		code, stdout, stderr := runCollie(argv...)
		want := "Failed to open VDI Nope (snapshot id: 0 snapshot tag: snap1): No VDI found\n"
		if code != exitFailure || stdout != "" || stderr != want {
			t.Errorf("collie %q: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", argv, code, stdout, stderr, want)
			continue
		}
		if got := <-names; got != "Nope|snap1|0" {
			t.Errorf("collie %q asked for %q", argv, got)
		}
	}
	for _, name := range []string{"help", "-h", "--help", "--", "h"} {
		code, _, stderr := runCollie("vdi", "read", "-p", port, "--", name)
		want := "Failed to open VDI " + name + " (snapshot id: 0 snapshot tag: ): No VDI found\n"
		if code != exitFailure || stderr != want {
			t.Errorf("vdi read -- %q: exit %d, stderr %q", name, code, stderr)
			continue
		}
		if got := <-names; got != name+"||0" {
			t.Errorf("vdi read -- %q asked for %q", name, got)
		}
	}
	code, _, stderr := runCollie("vdi", "delete", "-p", port, "-s", "3", "Gone")
	if code != exitFailure || stderr != "Failed to open VDI Gone (snapshot id: 3 snapshot tag: ): No VDI found\n" {
		t.Errorf("vdi delete: exit %d, stderr %q", code, stderr)
	}
	if got := <-names; got != "Gone||3" {
		t.Errorf("vdi delete asked for %q", got)
	}
}
