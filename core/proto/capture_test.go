package proto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// captureFile (testdata/dog-wire.log) holds every header
// and payload of a dog session against the original Sheepdog 1.0, recorded
// by a logging proxy. It is the golden reference for byte layouts.
const captureFile = "testdata/dog-wire.log"

// wireMsg is one captured message: a 48-byte header and, when the log holds
// it, its payload.
type wireMsg struct {
	Line    int    // line of the header in the log
	Section string // the dog command being run
	Conn    string // "c12"
	Dir     string // "REQ" or "RSP"
	Op      Opcode // from "op=0xNN"
	Hdr     []byte
	// Data is the payload when logged in full. Large payloads are logged as
	// length, head and SHA-256 only: then Data is nil and DataLen, DataHead
	// and DataSHA are set.
	Data     []byte
	DataLen  int
	DataHead []byte
	DataSHA  string
}

// loadCapture parses captureFile.
func loadCapture(tb testing.TB) []*wireMsg {
	tb.Helper()
	raw, err := os.ReadFile(captureFile)
	if err != nil {
		tb.Fatal(err)
	}
	var (
		msgs    []*wireMsg
		section string
		last    = map[string]*wireMsg{} // conn+dir → message awaiting its payload
	)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "################ "); ok {
			section = s
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || (f[1] != "REQ" && f[1] != "RSP") {
			continue
		}
		key := f[0] + " " + f[1]
		switch {
		case strings.HasPrefix(f[2], "op=") && len(f) == 4 && strings.HasPrefix(f[3], "hdr="):
			op, err := strconv.ParseUint(strings.TrimPrefix(f[2], "op=0x"), 16, 8)
			if err != nil {
				tb.Fatalf("%s:%d: %v", captureFile, n, err)
			}
			m := &wireMsg{Line: n, Section: section, Conn: f[0], Dir: f[1], Op: Opcode(op),
				Hdr: mustHex(tb, strings.TrimPrefix(f[3], "hdr="))}
			if len(m.Hdr) != HeaderSize {
				tb.Fatalf("%s:%d: header of %d bytes", captureFile, n, len(m.Hdr))
			}
			msgs = append(msgs, m)
			last[key] = m
		case f[2] == "data":
			m := last[key]
			if m == nil {
				tb.Fatalf("%s:%d: payload without header", captureFile, n)
			}
			if len(f) == 4 {
				m.Data = mustHex(tb, f[3])
				m.DataLen = len(m.Data)
				break
			}
			for _, kv := range f[3:] {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "len":
					m.DataLen, err = strconv.Atoi(v)
					if err != nil {
						tb.Fatalf("%s:%d: %v", captureFile, n, err)
					}
				case "head":
					m.DataHead = mustHex(tb, v)
				case "sha256":
					m.DataSHA = v
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(msgs) < 200 {
		tb.Fatalf("%s: only %d messages parsed", captureFile, len(msgs))
	}
	return msgs
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestCaptureHeadersRoundTrip decodes every header dog and sheep exchanged
// and checks that re-encoding gives the captured bytes, and that the fixed
// fields sit where docs/protocol.md §1.1–§1.4 says.
func TestCaptureHeadersRoundTrip(t *testing.T) {
	for _, m := range loadCapture(t) {
		var out [HeaderSize]byte
		switch m.Dir {
		case "REQ":
			var r Request
			if err := r.Unmarshal(m.Hdr); err != nil {
				t.Fatalf("line %d: %v", m.Line, err)
			}
			if r.Opcode != m.Op {
				t.Errorf("line %d: opcode %#x, log says %#x", m.Line, r.Opcode, m.Op)
			}
			// dog's sd_init_req picks the version from the opcode.
			if want := NewRequest(r.Opcode).ProtoVer; r.ProtoVer != want {
				t.Errorf("line %d: proto_ver %#x, want %#x", m.Line, r.ProtoVer, want)
			}
			if r.Flags&FlagCmdWrite != 0 && m.Data == nil && m.DataLen != int(r.DataLength) {
				t.Errorf("line %d: WRITE payload of %d bytes, data_length %d", m.Line, m.DataLen, r.DataLength)
			}
			if r.Flags&FlagCmdWrite != 0 && m.Data != nil && len(m.Data) != int(r.DataLength) {
				t.Errorf("line %d: WRITE payload of %d bytes, data_length %d", m.Line, len(m.Data), r.DataLength)
			}
			r.Marshal(out[:])
		case "RSP":
			var r Response
			if err := r.Unmarshal(m.Hdr); err != nil {
				t.Fatalf("line %d: %v", m.Line, err)
			}
			if r.Opcode != m.Op {
				t.Errorf("line %d: opcode %#x, log says %#x", m.Line, r.Opcode, m.Op)
			}
			if r.ProtoVer != 0 || r.Flags != 0 {
				t.Errorf("line %d: reply proto_ver %#x flags %#x, want 0 and 0", m.Line, r.ProtoVer, r.Flags)
			}
			if m.DataLen != 0 && m.DataLen != int(r.DataLength) {
				t.Errorf("line %d: payload of %d bytes, data_length %d", m.Line, m.DataLen, r.DataLength)
			}
			r.Marshal(out[:])
		}
		if !bytes.Equal(out[:], m.Hdr) {
			t.Errorf("line %d: re-encoded\n got %x\nwant %x", m.Line, out, m.Hdr)
		}
	}
}
