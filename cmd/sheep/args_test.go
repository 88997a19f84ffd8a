package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sheepdog-go/sheepdog/store"
)

func TestReorderArgs(t *testing.T) {
	arity := map[string]bool{"p": true, "port": true, "z": true, "f": false, "n": false, "c": true, "nbd": true, "P": true}
	for _, tc := range []struct{ in, want string }{
		{"sheep /d -p 7001 -z 1 -c local", "sheep -p 7001 -z 1 -c local -- /d"},
		{"sheep -p 7001 /d -f", "sheep -p 7001 -f -- /d"},
		{"sheep /d -p -1", "sheep -p -1 -- /d"},              // a value that looks like a flag stays a value
		{"sheep -p - /d", "sheep -p - -- /d"},                // so does "-"
		{"sheep -fn /d -p7001", "sheep -f -n -p 7001 -- /d"}, // getopt's groups and attached values
		{"sheep -fp 7001 /d", "sheep -f -p 7001 -- /d"},      // a group ending in a valued option
		{"sheep --nbd=none /d --port 7002", "sheep --nbd=none --port 7002 -- /d"},
		{"sheep -f -- -odd-dir -p", "sheep -f -- -odd-dir -p"}, // after -- all is positional
		{"sheep /a /b -f", "sheep -f -- /a /b"},                // two dirs stay two (refused later)
		{"sheep -q /d", "sheep -q -- /d"},                      // unknown: left for the parser to refuse
		{"sheep", "sheep"},
	} {
		got := strings.Join(reorderArgs(strings.Fields(tc.in), arity), " ")
		if got != tc.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDirectMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		set, dashD bool
		want       store.DirectMode
		err        string
	}{
		{name: "fresh", want: store.DirectFresh}, // the default
		{name: "fresh", dashD: true, want: store.DirectAll},
		{name: "all", set: true, want: store.DirectAll},
		{name: "all", set: true, dashD: true, want: store.DirectAll},
		{name: "off", set: true, want: store.DirectOff},
		{name: "off", set: true, dashD: true, err: "Options '-D' and '--direct=off' can not be both specified"},
		{name: "fresh", set: true, dashD: true, err: "Options '-D' and '--direct=fresh' can not be both specified"},
		{name: "yes", set: true, err: "Invalid --direct 'yes'"},
	} {
		got, err := directMode(tc.name, tc.set, tc.dashD)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("directMode(%q, %v, %v) = %v, %v; want error %q", tc.name, tc.set, tc.dashD, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("directMode(%q, %v, %v) = %v, %v; want %v", tc.name, tc.set, tc.dashD, got, err, tc.want)
		}
	}
}

func TestParseU32(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0", 0, true}, {"4294967295", 1<<32 - 1, true}, {"+7", 7, true}, {" 7", 7, true},
		{"4294967296", 0, false}, {"9223372036854775808", 0, false}, {"-1", 0, false},
		{"a", 0, false}, {"42a", 0, false}, {"+", 0, false}, {"-", 0, false}, {"", 0, false}, {"0x10", 0, false},
	} {
		got, ok := parseU32(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseU32(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestJournalOrJoin(t *testing.T) {
	for in, want := range map[string]bool{
		"dir=/j,size=1G": true, "size=256M": true, "skip": true, "dir=/j,skip": true,
		"127.0.0.1:7000": false, "127.0.0.1:7000,127.0.0.1:7001": false, "": false, "dir=/j,127.0.0.1:7000": false,
	} {
		if got := isJournalOptions(in); got != want {
			t.Errorf("isJournalOptions(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseRecovery(t *testing.T) {
	th, err := parseRecovery("max=50,interval=1000")
	if err != nil || th.Max != 50 || th.Interval.Milliseconds() != 1000 {
		t.Errorf("max=50,interval=1000: %+v, %v", th, err)
	}
	if th, err := parseRecovery("max=50"); err != nil || th.Max != 0 {
		t.Errorf("max alone throttles nothing (as Sheepdog): %+v, %v", th, err)
	}
	for _, bad := range []string{"max=x", "speed=1", "interval=-1"} {
		if _, err := parseRecovery(bad); err == nil {
			t.Errorf("parseRecovery(%q) accepted", bad)
		}
	}
}

func TestParseIOAddr(t *testing.T) {
	for in, want := range map[string]string{
		"host=127.0.0.1,port=8001": "127.0.0.1:8001",
		"host=10.0.0.2":            "10.0.0.2:7000", // Sheepdog's default port
		"port=8002,host=::1":       "[::1]:8002",
	} {
		if got, err := parseIOAddr(in); err != nil || got.String() != want {
			t.Errorf("parseIOAddr(%q) = %v, %v, want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "port=8001", "host=x", "host=127.0.0.1,port=0", "host=127.0.0.1,port=65536", "host=127.0.0.1,speed=1"} {
		if _, err := parseIOAddr(bad); err == nil {
			t.Errorf("parseIOAddr(%q) accepted", bad)
		}
	}
}

func TestClusterDriver(t *testing.T) {
	for in, want := range map[string]string{"": "", "local": defaultLocalDir, "local:/tmp/x": "/tmp/x"} {
		if got, err := clusterDriver(in); err != nil || got != want {
			t.Errorf("clusterDriver(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"corosync", "zookeeper:127.0.0.1:2181", "local:", "shepherd"} {
		if _, err := clusterDriver(bad); err == nil || !strings.Contains(err.Error(), "Invalid cluster driver '"+bad+"'") {
			t.Errorf("clusterDriver(%q): %v", bad, err)
		}
	}
}

func TestLocalRegistry(t *testing.T) {
	dir := t.TempDir()
	a, peers, _, err := registerLocal(dir, "127.0.0.1:7000", "127.0.0.1:17000")
	if err != nil || len(peers) != 0 {
		t.Fatalf("first: %v %v", peers, err)
	}
	// A sheep that died without cleaning up: its pid is gone.
	if err := writeFile(dir+"/sheep-127.0.0.1:7005", "2147483646 127.0.0.1:7005 127.0.0.1:17005\n"); err != nil {
		t.Fatal(err)
	}
	b, peers, seeds, err := registerLocal(dir, "127.0.0.1:7001", "127.0.0.1:5001")
	if err != nil || !slices.Equal(peers, []string{"127.0.0.1:7000"}) || !slices.Equal(seeds, []string{"127.0.0.1:17000"}) {
		t.Fatalf("second: %v %v %v", peers, seeds, err)
	}
	a.Remove()
	b.Remove()
	_, peers, _, _ = registerLocal(dir, "127.0.0.1:7002", "127.0.0.1:17002")
	if len(peers) != 0 {
		t.Fatalf("after both left: %v", peers)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
