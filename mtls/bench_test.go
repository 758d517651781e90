package mtls_test

import (
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
// "new" one seen for the first time (signature checks included), and
// "crypto/tls" what Go's own RequireAndVerifyClientCert does for a full
// handshake, for comparison.
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
	peers := make([]tls.ConnectionState, 64)
	for i := range peers {
		l := pki.Leaf(b, pki.ID(b, clientPath))
		peers[i] = tls.ConnectionState{PeerCertificates: []*x509.Certificate{l.Cert, pki.Intermediate}}
	}
	b.Run("remembered", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := cfg.VerifyConnection(peers[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			// A certificate not seen before: issuing it is not timed.
			b.StopTimer()
			l := pki.Leaf(b, pki.ID(b, clientPath))
			cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{l.Cert, pki.Intermediate}}
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
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			opts.Intermediates.AddCert(peers[0].PeerCertificates[1])
			if _, err := peers[0].PeerCertificates[0].Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
