package store

import "testing"

// A reweighed space is what NodeSpace reports, also after a reopen.
func TestSetNodeSpace(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	if _, err := s.NodeSpace(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNodeSpace(987654321); err != nil {
		t.Fatal(err)
	}
	if got, err := s.NodeSpace(); err != nil || got != 987654321 {
		t.Fatalf("NodeSpace %d, %v after SetNodeSpace", got, err)
	}
	s.Close()
	if got, err := openStore(t, Config{Dir: dir}).NodeSpace(); err != nil || got != 987654321 {
		t.Fatalf("NodeSpace after reopen %d, %v; want the reweighed 987654321", got, err)
	}
}
