package testpki_test

import (
	"crypto"
	"crypto/x509"
	"testing"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestLeafVerifies(t *testing.T) {
	for _, alg := range keys.Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			p := testpki.New(t, "example.org", testpki.WithAlgorithm(alg))
			leaf := p.Leaf(t, p.ID(t, "/ns/prod/sa/web"), testpki.WithKeyAlgorithm(alg))
			if _, err := leaf.Cert.Verify(x509.VerifyOptions{
				Roots:         p.Roots(),
				Intermediates: p.Intermediates(),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*x509.Certificate{p.Root, p.Intermediate, leaf.Cert} {
				if err := issuance.Lint(c.Raw); err != nil {
					t.Errorf("%s: %v", c.Subject, err)
				}
			}
			if got := leaf.TLS(); len(got.Certificate) != 2 {
				t.Errorf("TLS chain has %d certificates, want leaf + intermediate", len(got.Certificate))
			}
		})
	}
}

// TestRotatedSharesTheRoot: a rotated PKI's leaves verify against the same
// root through a new intermediate with a key of its own.
func TestRotatedSharesTheRoot(t *testing.T) {
	p := testpki.New(t, "example.org")
	r := p.Rotated(t)
	if r.Root != p.Root || r.Intermediate.Equal(p.Intermediate) || r.IntermediateKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(p.IntermediateKey.Public()) {
		t.Fatal("the rotated PKI does not share the root alone")
	}
	leaf := r.Leaf(t, r.ID(t, "/billing/worker"))
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.Roots(), Intermediates: r.Intermediates(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.Roots(), Intermediates: p.Intermediates(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a leaf of the rotated intermediate verified through the old one")
	}
}
