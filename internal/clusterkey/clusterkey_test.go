package clusterkey

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
)

func mustTLS(t *testing.T, secret string) *TLS {
	t.Helper()
	k, err := New([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake between a server and a client config
// over loopback TCP and returns both sides' errors; the client also
// reads one byte, so that a server's refusal after the client's last
// handshake message (TLS 1.3) shows on the client too.
func handshake(server, client *tls.Config) (serr, cerr error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, server)
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = s.Write([]byte{1})
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err, err
	}
	defer c.Close()
	tc := tls.Client(c, client)
	if cerr = tc.Handshake(); cerr == nil {
		_, cerr = tc.Read(make([]byte, 1))
	}
	c.Close()
	return <-done, cerr
}

func TestPeersOfOneKeyAuthenticate(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	n1, n2 := mustTLS(t, secret), mustTLS(t, secret)
	if serr, cerr := handshake(n1.Server, n2.Client); serr != nil || cerr != nil {
		t.Fatalf("same key: server %v, client %v", serr, cerr)
	}
	if serr, cerr := handshake(n2.Server, n1.Client); serr != nil || cerr != nil {
		t.Fatalf("same key, other direction: server %v, client %v", serr, cerr)
	}
}

func TestOtherKeyRefused(t *testing.T) {
	mine := mustTLS(t, "0123456789abcdef0123456789abcdef")
	other := mustTLS(t, "0123456789abcdef0123456789abcdeX")
	if serr, cerr := handshake(mine.Server, other.Client); serr == nil && cerr == nil {
		t.Fatal("a client of another key was accepted")
	}
	if serr, cerr := handshake(other.Server, mine.Client); serr == nil && cerr == nil {
		t.Fatal("a server of another key was trusted")
	}
	// A client with no certificate at all (an anonymous TLS client).
	anon := mine.Client.Clone()
	anon.Certificates = nil
	if serr, _ := handshake(mine.Server, anon); serr == nil {
		t.Fatal("a client without a certificate was accepted")
	}
}

func TestGossipKey(t *testing.T) {
	a, _ := New([]byte("0123456789abcdef0123456789abcdef"))
	b, _ := New([]byte("0123456789abcdef0123456789abcdef"))
	c, _ := New([]byte("0123456789abcdef0123456789abcdeX"))
	if len(a.GossipKey()) != 32 || !bytes.Equal(a.GossipKey(), b.GossipKey()) {
		t.Fatal("gossip key not 32 bytes, or not the same for one secret")
	}
	if bytes.Equal(a.GossipKey(), c.GossipKey()) {
		t.Fatal("two secrets gave one gossip key")
	}
	if bytes.Contains(a.GossipKey(), []byte("0123456789abcdef")) {
		t.Fatal("the gossip key holds the secret")
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("a 5-byte secret was taken")
	}
}
