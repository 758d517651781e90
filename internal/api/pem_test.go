package api

import (
	"crypto/x509"
	"testing"
)

// The CA certificates' PEM is kept, not re-encoded per response, and
// what is kept stays bounded however many CA sets a process sees.
func TestCAPEMIsKeptAndBounded(t *testing.T) {
	var certs []*x509.Certificate
	for i := range 3 * maxCAPEMs {
		certs = append(certs, &x509.Certificate{Raw: []byte{0x30, 0x01, byte(i)}})
	}
	for round := range 2 {
		for i, c := range certs {
			if got, want := caPEM(c), pemCert(c); got != want {
				t.Fatalf("round %d, certificate %d: caPEM %q, want %q", round, i, got, want)
			}
			caPEMs.Lock()
			n := len(caPEMs.m)
			caPEMs.Unlock()
			if n > maxCAPEMs {
				t.Fatalf("%d PEMs kept, want at most %d", n, maxCAPEMs)
			}
		}
	}
	c := certs[0]
	caPEM(c)
	caPEMs.Lock()
	_, kept := caPEMs.m[c]
	caPEMs.Unlock()
	if !kept {
		t.Error("a CA certificate's PEM was not kept")
	}
}
