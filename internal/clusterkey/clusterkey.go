// Package clusterkey turns a cluster's shared secret (sheep --cluster-key
// FILE) into what authenticates its peers: the key memberlist encrypts
// and signs gossip with, and mutual TLS for the sheeps' object traffic
// and raft.
//
// Every node derives the same certificate authority from the secret (an
// Ed25519 key from HKDF-SHA256, and a CA certificate built from a fixed
// template; Ed25519 signatures are deterministic, so every node's CA
// certificate is byte for byte the same). Each node then makes its own
// key pair and a leaf certificate signed by that CA, valid for both ends
// of a connection. A peer is authenticated when it presents a leaf the
// CA signed, which only a holder of the secret can make. Nothing derived
// from the secret is written to disk.
package clusterkey

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"time"
)

// MinLen is the shortest secret taken: 16 bytes (128 bits), as in
// `head -c 32 /dev/urandom > key`.
const MinLen = 16

// ServerName is the name every leaf certificate carries and every peer
// checks: peers are known by the CA that signed them, not by address.
const ServerName = "sheepdog-peer"

// Key is a loaded cluster secret.
type Key struct {
	secret []byte
}

// Load reads the secret from path. The file's bytes are the secret
// (a trailing newline included, so that `echo` and `head -c` files of the
// same text differ; use one file for every node).
func Load(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	return New(b)
}

// New returns the key of secret.
func New(secret []byte) (*Key, error) {
	if len(secret) < MinLen {
		return nil, fmt.Errorf("cluster key: %d bytes, at least %d expected (for example: head -c 32 /dev/urandom > FILE)", len(secret), MinLen)
	}
	return &Key{secret: append([]byte(nil), secret...)}, nil
}

// derive is HKDF-SHA256 of the secret for one purpose.
func (k *Key) derive(purpose string, n int) []byte {
	b, err := hkdf.Key(sha256.New, k.secret, []byte("sheepdog-go cluster key"), purpose, n)
	if err != nil {
		panic(err) // only for n beyond 255*32
	}
	return b
}

// GossipKey is memberlist's SecretKey: 32 bytes, AES-256-GCM.
func (k *Key) GossipKey() []byte { return k.derive("gossip", 32) }

// caTemplate is the CA certificate every node builds alike.
var caTemplate = x509.Certificate{
	SerialNumber:          big.NewInt(1),
	Subject:               pkix.Name{CommonName: "sheepdog-go cluster CA"},
	NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
	NotAfter:              time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC),
	KeyUsage:              x509.KeyUsageCertSign,
	BasicConstraintsValid: true,
	IsCA:                  true,
	MaxPathLenZero:        true,
}

// TLS is a node's pair of TLS configurations for peer links: server for
// its listeners (a client certificate signed by the cluster's CA is
// required), client for its dials (the server must present one).
type TLS struct {
	Server *tls.Config
	Client *tls.Config
}

// TLS makes this node's leaf certificate and the configurations that use
// it.
func (k *Key) TLS() (*TLS, error) {
	caKey := ed25519.NewKeyFromSeed(k.derive("ca", ed25519.SeedSize))
	caDER, err := x509.CreateCertificate(nil, &caTemplate, &caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster key: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	leaf := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ServerName},
		DNSNames:     []string{ServerName},
		NotBefore:    now.Add(-24 * time.Hour), // clocks of peers differ
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(nil, leaf, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster key: node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: priv}
	return &TLS{
		Server: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS13,
		},
		Client: &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      pool,
			ServerName:   ServerName,
			MinVersion:   tls.VersionTLS13,
		},
	}, nil
}
