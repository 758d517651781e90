// Package discovertest makes the certificates discovery tests look for:
// chains of CAs that are not mica, self-signed, expired and weak
// certificates, each made with crypto/x509 exactly as specified (mica's
// own come from package testpki), and TLS servers on loopback that
// present them.
package discovertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// Cert is a certificate and its key; when IsCA, it can issue.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Spec describes a certificate. Zero values are a P-256 key, valid from
// an hour ago for 30 days, a serverAuth leaf.
type Spec struct {
	CN                  string
	DNS                 []string
	IPs                 []string
	IsCA                bool
	NotBefore, NotAfter time.Time
	Key                 crypto.Signer
	SigAlg              x509.SignatureAlgorithm
}

// P256 makes a fresh ECDSA P-256 key.
func P256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Issue signs spec with parent, or with its own key when parent is nil.
func Issue(t testing.TB, parent *Cert, spec Spec) *Cert {
	t.Helper()
	if spec.Key == nil {
		spec.Key = P256(t)
	}
	if spec.NotBefore.IsZero() {
		now := time.Now()
		spec.NotBefore, spec.NotAfter = now.Add(-time.Hour), now.Add(30*24*time.Hour)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: spec.CN}, DNSNames: spec.DNS,
		NotBefore: spec.NotBefore, NotAfter: spec.NotAfter, SignatureAlgorithm: spec.SigAlg,
		BasicConstraintsValid: true, IsCA: spec.IsCA,
	}
	for _, ip := range spec.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if spec.IsCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	signer, issuer := spec.Key, tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, spec.Key.Public(), signer)
	if err != nil {
		t.Fatalf("discovertest: making %s: %v", spec.CN, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: c, Key: spec.Key}
}

// TLS is the certificate with the chain a server presents after it.
func (c *Cert) TLS(chain ...*x509.Certificate) tls.Certificate {
	out := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, ch := range chain {
		out.Certificate = append(out.Certificate, ch.Raw)
	}
	return out
}

// PEM encodes certificates as PEM blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a key as unencrypted PKCS#8 PEM.
func KeyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFile writes data with mode, failing the test on error.
func WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// Serve runs a TLS server on addr (host:0 for any port) until the test
// ends and returns its address. Each connection completes a handshake and
// is closed.
func Serve(t testing.TB, addr string, cfg *tls.Config) net.Addr {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("discovertest: listening on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr()
}
