package ca_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
)

type hierarchy struct {
	root, inter *x509.Certificate
	rootKey     crypto.Signer
	iss         *issuance.Issuer
}

func newHierarchy(t *testing.T, cn string) hierarchy {
	t.Helper()
	rootKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td, CommonName: cn})
	if err != nil {
		t.Fatal(err)
	}
	interKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	csrDER, err := ca.NewIntermediateCSR(interKey, ca.IntermediateConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	inter, err := ca.SignIntermediate(root, rootKey, csr, ca.IntermediateConfig{TrustDomain: td, Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuance.New(issuance.Config{Cert: inter, Signer: interKey})
	if err != nil {
		t.Fatal(err)
	}
	return hierarchy{root: root, inter: inter, rootKey: rootKey, iss: iss}
}

func (h hierarchy) leaf(t *testing.T) *x509.Certificate {
	t.Helper()
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	id, _ := identity.Parse("spiffe://example.org/crossed")
	now := time.Now()
	c, err := h.iss.Issue(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCrossSign: with the new root certified by the old and the old by the
// new, a verifier that trusts either root accepts leaves of both
// hierarchies, in Go and in OpenSSL.
func TestCrossSign(t *testing.T) {
	oldH, newH := newHierarchy(t, "example.org Root CA"), newHierarchy(t, "example.org Root CA 2")
	newByOld, err := ca.CrossSign(newH.root, oldH.root, oldH.rootKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldByNew, err := ca.CrossSign(oldH.root, newH.root, newH.rootKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CrossSign(newH.root, oldH.root, newH.rootKey, nil, nil); err == nil {
		t.Fatal("CrossSign accepted a key that is not the issuer's")
	}
	if err := issuance.Lint(newByOld.Raw); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		h       hierarchy
		trusted *x509.Certificate
		chain   []*x509.Certificate
	}{
		{"new leaf, old root trusted", newH, oldH.root, []*x509.Certificate{newH.inter, newByOld}},
		{"old leaf, new root trusted", oldH, newH.root, []*x509.Certificate{oldH.inter, oldByNew}},
		{"new leaf, new root trusted", newH, newH.root, []*x509.Certificate{newH.inter, newByOld}},
		{"old leaf, old root trusted", oldH, oldH.root, []*x509.Certificate{oldH.inter, oldByNew}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := tc.h.leaf(t)
			roots, inters := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(tc.trusted)
			for _, c := range tc.chain {
				inters.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("Go: %v", err)
			}
			if _, err := exec.LookPath("openssl"); err != nil {
				t.Fatal("openssl is not installed: run scripts/test.sh")
			}
			out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", writePEM(t, filepath.Join(dir, "ca.pem"), tc.trusted),
				"-untrusted", writePEM(t, filepath.Join(dir, "chain.pem"), tc.chain...), writePEM(t, filepath.Join(dir, "leaf.pem"), leaf)).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl verify: %v\n%s", err, out)
			}
		})
	}
	// Without the cross-certificate, the other root does not do.
	roots := x509.NewCertPool()
	roots.AddCert(oldH.root)
	inters := x509.NewCertPool()
	inters.AddCert(newH.inter)
	if _, err := newH.leaf(t).Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a new leaf verified against the old root without the cross-certificate")
	}
}
