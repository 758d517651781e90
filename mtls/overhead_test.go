package mtls

import (
	"crypto/x509"
	"testing"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/revocation"
)

// BenchmarkNewPeerOverhead measures what a Verifier adds to crypto/x509's
// verification of a peer it has not seen: the bounds, the rules of
// docs/verifier.md, the usage, the identity, the revocation feed and the
// chain cache's key, on a path crypto/x509 already verified ("added"),
// next to crypto/x509's own verification of that path ("x509"). Small
// operations, so figures on a busy machine stay close.
func BenchmarkNewPeerOverhead(b *testing.B) {
	pki := testpki.New(b, "example.org")
	leaf := pki.Leaf(b, pki.ID(b, "/billing/worker"))
	certs := []*x509.Certificate{leaf.Cert, pki.Intermediate}
	path := []*x509.Certificate{leaf.Cert, pki.Intermediate, pki.Root}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	set := &revocation.Set{}
	snap := revocation.Snapshot{Seq: 1}
	for i := range 10000 {
		snap.Revoked = append(snap.Revoked, revocation.Event{Kind: revocation.KindRevoked, Serial: string(rune('a' + i%26))})
	}
	set.Reset(snap)
	v, err := NewVerifier(VerifierConfig{Roots: StaticRoots(pki.Root), Authorize: AuthorizeTrustDomains("example.org"), Revocations: set})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("added", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = chainKey(certs, usages)
			if precheck(certs) != nil || !namesUsage(leaf.Cert, usages) || checkPath(path) != nil {
				b.Fatal("refused")
			}
			id, rej := readIdentity(leaf.Cert)
			if rej != nil || v.revoked(path, id, false) != nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("x509", func(b *testing.B) {
		b.ReportAllocs()
		roots := pki.Roots()
		for b.Loop() {
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: usages}
			opts.Intermediates.AddCert(pki.Intermediate)
			if _, err := leaf.Cert.Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
