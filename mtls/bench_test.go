package mtls_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

// BenchmarkVerifyConnection measures the verification a server config runs
// per handshake, with a revocation set of 10,000 serials: "remembered" is a
// peer whose chain verified before (every resumption, every reconnection),
// "new" one seen for the first time (signatures and every rule of
// docs/verifier.md), and "crypto/tls" what Go's own
// RequireAndVerifyClientCert does for a full handshake, for comparison.
func BenchmarkVerifyConnection(b *testing.B) {
	pki := testpki.New(b, "example.org")
	set := &revocation.Set{}
	snap := revocation.Snapshot{Seq: 1}
	for i := range 10000 {
		snap.Revoked = append(snap.Revoked, revocation.Event{Kind: revocation.KindRevoked, Serial: big.NewInt(int64(i + 1)).Text(16)})
	}
	set.Reset(snap)
	cfg, err := mtls.ServerConfig(mtls.Options{Source: sourceOf(pki, pki.Leaf(b, pki.ID(b, serverPath))),
		Authorize: mtls.AuthorizePathPrefixes("spiffe://example.org/billing/"), Revocations: set})
	if err != nil {
		b.Fatal(err)
	}
	base := pki.Leaf(b, pki.ID(b, clientPath))
	// A new peer is a copy of base with another serial: the same work to
	// verify, for the price of one signature to make.
	newPeer := func() tls.ConnectionState {
		tmpl := *base.Cert
		sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			b.Fatal(err)
		}
		tmpl.SerialNumber = sn.Add(sn, big.NewInt(1))
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, pki.Intermediate, base.Cert.PublicKey, pki.IntermediateKey)
		if err != nil {
			b.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			b.Fatal(err)
		}
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c, pki.Intermediate}}
	}
	remembered := tls.ConnectionState{PeerCertificates: []*x509.Certificate{base.Cert, pki.Intermediate}}
	b.Run("remembered", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := cfg.VerifyConnection(remembered); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			cs := newPeer()
			b.StartTimer()
			if err := cfg.VerifyConnection(cs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto/tls", func(b *testing.B) {
		b.ReportAllocs()
		roots := pki.Roots()
		for b.Loop() {
			b.StopTimer()
			cs := newPeer()
			b.StartTimer()
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			opts.Intermediates.AddCert(cs.PeerCertificates[1])
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
