package credential_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestParseCertificates(t *testing.T) {
	pki := testpki.New(t, "example.org")
	leaf := pki.Leaf(t, pki.ID(t, "/svc"))
	both := credential.EncodeCertificates([]*x509.Certificate{leaf.Cert, pki.Intermediate})
	tests := []struct {
		name string
		in   string
		n    int
		err  string
	}{
		{"two in order", string(both), 2, ""},
		{"other blocks skipped", "# comment\n" + string(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{1}})) + string(both), 2, ""},
		{"none", "not pem", 0, "no PEM certificate"},
		{"empty", "", 0, "no PEM certificate"},
		{"bad DER", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})), 0, "certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := credential.ParseCertificates([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "credential: ") {
					t.Fatalf("err = %v, want one about %q", err, tt.err)
				}
				return
			}
			if err != nil || len(got) != tt.n || !got[0].Equal(leaf.Cert) {
				t.Fatalf("got %d certificates, %v", len(got), err)
			}
		})
	}
}

func TestParsePrivateKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8, _ := credential.EncodePrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	block := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"pkcs8", string(pkcs8), true},
		{"sec1 after its parameters", block("EC PARAMETERS", []byte{6, 8}) + block("EC PRIVATE KEY", sec1), true},
		{"pkcs1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), true},
		{"encrypted", block("ENCRYPTED PRIVATE KEY", []byte{1, 2}), false},
		{"garbage in a key block", block("PRIVATE KEY", []byte("junk")), false},
		{"certificate only", block("CERTIFICATE", []byte{1}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := credential.ParsePrivateKey([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("ParsePrivateKey: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "junk") {
				t.Errorf("error echoes the input: %v", err)
			}
			if tt.ok && k == nil {
				t.Fatal("no key")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	pki := testpki.New(f, "example.org")
	leaf := pki.Leaf(f, pki.ID(f, "/svc"))
	key, _ := credential.EncodePrivateKey(leaf.Key)
	f.Add(credential.EncodeCertificates([]*x509.Certificate{leaf.Cert}))
	f.Add(key)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := credential.ParseCertificates(data); err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
		if k, err := credential.ParsePrivateKey(data); err == nil && k == nil {
			t.Fatal("no error and no key")
		}
	})
}
