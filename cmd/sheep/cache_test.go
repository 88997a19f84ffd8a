package main

import (
	"strings"
	"testing"
)

func TestCacheOptions(t *testing.T) {
	for _, tc := range []struct {
		in       string
		isCache  bool
		want     cacheOptions
		errMatch string
	}{
		{in: "size=256M", isCache: true, want: cacheOptions{Size: 256 << 20, Dir: "/d/cache"}},
		{in: "size=2G,dir=/ssd/c,directio", isCache: true, want: cacheOptions{Size: 2 << 30, Dir: "/ssd/c", DirectIO: true}},
		{in: "directio,size=10M", isCache: true, want: cacheOptions{Size: 10 << 20, Dir: "/d/cache", DirectIO: true}},
		{in: "size=1K", isCache: true, errMatch: "size must be between"},
		{in: "size=lots", isCache: true, errMatch: "size must be between"},
		{in: "dir=/x", isCache: true, errMatch: "size=SIZE is required"},
		{in: "size=64M,bogus", isCache: true, errMatch: "Invalid cache option 'bogus'"},
		{in: "io=4", isCache: false},
		{in: "8", isCache: false},
	} {
		if got := isCacheOptions(tc.in); got != tc.isCache {
			t.Errorf("isCacheOptions(%q) = %v", tc.in, got)
		}
		if !tc.isCache {
			continue
		}
		o, err := parseCacheOptions(tc.in, "/d")
		if tc.errMatch != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errMatch) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.errMatch)
			}
			continue
		}
		if err != nil || *o != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, o, err, tc.want)
		}
	}
}
