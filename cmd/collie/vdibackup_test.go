package main

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestCompactBackup(t *testing.T) {
	const size = 8 * backupSector
	from := bytes.Repeat([]byte{1}, size)
	for _, tc := range []struct {
		name        string
		change      []int // byte offsets that differ
		off, length uint32
	}{
		{"unchanged", nil, size, 0},
		{"one sector", []int{2*backupSector + 7}, 2 * backupSector, backupSector},
		{"two sectors apart", []int{backupSector, 5*backupSector + 511}, backupSector, 5 * backupSector},
		{"first and last byte", []int{0, size - 1}, 0, size},
	} {
		to := bytes.Clone(from)
		for _, c := range tc.change {
			to[c] = 2
		}
		off, n := compactBackup(to, from)
		if off != tc.off || n != tc.length {
			t.Errorf("%s: offset %d length %d, want %d %d", tc.name, off, n, tc.off, tc.length)
		}
	}
}

// TestBackupRecord checks the stream's little-endian layout.
func TestBackupRecord(t *testing.T) {
	got := hex.EncodeToString(backupRecord{Idx: 3, Offset: 0x200, Length: 0x1000}.marshal())
	if want := "03000000" + "00020000" + "00100000" + "00000000"; got != want {
		t.Errorf("record %s, want %s", got, want)
	}
	if got := hex.EncodeToString(backupRecord{Idx: backupEnd}.marshal()); got != "ffffffff"+"000000000000000000000000" {
		t.Errorf("end marker %s", got)
	}
}
