package server

import "testing"

func TestSpaceVaried(t *testing.T) {
	for _, tc := range []struct {
		old, measured uint64
		want          bool
	}{
		{0, 0, false},
		{0, 1, true},
		{1000, 1000, false},
		{1000, 1009, false},
		{1000, 991, false},
		{1000, 1010, true},
		{1000, 990, true},
		{1 << 40, 1 << 39, true},
	} {
		if got := spaceVaried(tc.old, tc.measured); got != tc.want {
			t.Errorf("spaceVaried(%d, %d) = %v, want %v", tc.old, tc.measured, got, tc.want)
		}
	}
}
