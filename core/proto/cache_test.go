package proto

import (
	"reflect"
	"testing"
)

func TestCacheInfoRoundTrip(t *testing.T) {
	in := CacheInfo{Size: 256 << 20, Used: 12 << 20, DirectIO: true, Vdis: []CacheVdi{{Vid: 0x7c2b25, Dirty: 3, Total: 5}, {Vid: 1, Total: 1}}}
	b := in.Marshal()
	if len(b) != 12312 {
		t.Fatalf("object_cache_info is %d bytes, want 12312", len(b))
	}
	var out CacheInfo
	if err := out.Unmarshal(b); err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	b[16+12*CacheInfoMax] = 0xff
	b[16+12*CacheInfoMax+3] = 0x7f
	if out.Unmarshal(b) == nil {
		t.Fatal("a count past CACHE_MAX decoded")
	}
	if out.Unmarshal(b[:100]) == nil {
		t.Fatal("a short reply decoded")
	}
}

func FuzzCacheInfo(f *testing.F) {
	f.Add((&CacheInfo{Vdis: []CacheVdi{{1, 2, 3}}}).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var ci CacheInfo
		if ci.Unmarshal(b) == nil {
			var again CacheInfo
			if err := again.Unmarshal(ci.Marshal()); err != nil || !reflect.DeepEqual(ci, again) {
				t.Fatalf("re-encode differs: %v", err)
			}
		}
	})
}
