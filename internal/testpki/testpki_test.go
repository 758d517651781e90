package testpki_test

import (
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
