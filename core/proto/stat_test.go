package proto

import "testing"

// TestStatLayout pins every counter to its offset in struct sd_stat.
func TestStatLayout(t *testing.T) {
	var s Stat
	for i, f := range s.fields() {
		*f = uint64(i + 1)
	}
	b := s.Marshal()
	if len(b) != StatSize || StatSize != 120 {
		t.Fatalf("sd_stat is %d bytes (StatSize %d), want 120", len(b), StatSize)
	}
	offsets := []struct {
		name string
		off  int
		got  uint64
	}{
		{"gway_active_nr", 0, s.GwayActive}, {"peer_active_nr", 8, s.PeerActive},
		{"gway_total_nr", 16, s.GwayTotal}, {"peer_total_nr", 24, s.PeerTotal},
		{"gway_total_rx", 32, s.GwayRx}, {"gway_total_tx", 40, s.GwayTx},
		{"peer_total_rx", 48, s.PeerRx}, {"peer_total_tx", 56, s.PeerTx},
		{"gway_total_remove_nr", 64, s.GwayRemove}, {"gway_total_read_nr", 72, s.GwayRead},
		{"gway_total_write_nr", 80, s.GwayWrite}, {"gway_total_flush_nr", 88, s.GwayFlush},
		{"peer_total_remove_nr", 96, s.PeerRemove}, {"peer_total_read_nr", 104, s.PeerRead},
		{"peer_total_write_nr", 112, s.PeerWrite},
	}
	for _, o := range offsets {
		if v := le.Uint64(b[o.off:]); v != o.got || v != uint64(o.off/8+1) {
			t.Errorf("%s @%d = %d, field holds %d", o.name, o.off, v, o.got)
		}
	}
	var back Stat
	if err := back.Unmarshal(b); err != nil || back != s {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, s)
	}
	if err := back.Unmarshal(b[:StatSize-1]); err == nil {
		t.Fatal("short sd_stat accepted")
	}
}

// TestStatExt: the extension after sd_stat round-trips and a short one is
// refused.
func TestStatExt(t *testing.T) {
	e := StatExt{DegradedReads: 0x0102030405060708}
	b := e.Marshal()
	if len(b) != StatExtSize || le.Uint64(b) != e.DegradedReads {
		t.Fatalf("extension encodes as %x", b)
	}
	var back StatExt
	if err := back.Unmarshal(b); err != nil || back != e {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if err := back.Unmarshal(b[:StatExtSize-1]); err == nil {
		t.Fatal("short extension accepted")
	}
}
