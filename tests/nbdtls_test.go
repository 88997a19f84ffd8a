package tests

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tlsCreds writes a CA and a server certificate for 127.0.0.1 signed by it
// into a fresh dir laid out as qemu's tls-creds-x509 and libnbd's
// tls-certificates expect (ca-cert.pem, server-cert.pem, server-key.pem).
func tlsCreds(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sheepdog test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write("ca-cert.pem", "CERTIFICATE", caDER)
	write("server-cert.pem", "CERTIFICATE", srvDER)
	write("server-key.pem", "PRIVATE KEY", keyDER)
	return dir
}

// TestNBDTLS: with --nbd-tls-cert/--nbd-tls-key and --nbd-tls-require,
// qemu-io, qemu-img and nbdcopy read and write an export over TLS
// (STARTTLS), and clients without TLS are refused.
func TestNBDTLS(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "nbdcopy", "nbdinfo")
	creds := tlsCreds(t)
	s, addr := nbdSheep(t, "--nbd-tls-cert", filepath.Join(creds, "server-cert.pem"),
		"--nbd-tls-key", filepath.Join(creds, "server-key.pem"), "--nbd-tls-require")
	s.must(t, nil, "vdi", "create", "secret", "8M")
	host, port, _ := net.SplitHostPort(addr)
	obj := "tls-creds-x509,id=tls0,dir=" + creds + ",endpoint=client"
	opts := "driver=nbd,host=" + host + ",port=" + port + ",export=secret,tls-creds=tls0"

	tool(t, "qemu-io", "--object", obj, "--image-opts", opts, "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 1M 64k")
	out := tool(t, "qemu-io", "--object", obj, "--image-opts", opts, "-c", "read -P 0x5a 0 1M", "-c", "read -P 0xa5 1M 64k")
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io over TLS read back other data:\n%s", out)
	}
	if out := tool(t, "qemu-img", "info", "--object", obj, "--image-opts", opts); !strings.Contains(out, "8 MiB") {
		t.Fatalf("qemu-img info over TLS:\n%s", out)
	}

	uri := "nbds://" + addr + "/secret?tls-certificates=" + creds
	src := filepath.Join(t.TempDir(), "src.raw")
	data := make([]byte, 8<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	tool(t, "nbdcopy", src, uri)
	dst := filepath.Join(t.TempDir(), "dst.raw")
	tool(t, "nbdcopy", uri, dst)
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy over TLS: the export read back differs from what was written")
	}
	if got := s.must(t, nil, "vdi", "read", "secret", "0", strconv.Itoa(len(data))); got != string(data) {
		t.Fatal("collie reads other data than nbdcopy wrote over TLS")
	}

	// Without TLS: refused.
	if r := run(t, nil, "nbdinfo", nbdURI(addr, "secret")); r.Code == 0 {
		t.Fatalf("nbdinfo without TLS was served:\n%s", r.Stdout)
	} else {
		t.Logf("nbdinfo without TLS: exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
	}
	if r := run(t, nil, "qemu-img", "info", "--image-opts", "driver=nbd,host="+host+",port="+port+",export=secret"); r.Code == 0 {
		t.Fatalf("qemu-img without TLS was served:\n%s", r.Stdout)
	}
	if !strings.Contains(sheepLog(t, s), "nbd client without TLS refused") {
		t.Fatal("the refusal was not logged")
	}
}
