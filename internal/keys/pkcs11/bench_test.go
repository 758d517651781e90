//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/pkcs11"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

// BenchmarkSignP256 is one ECDSA P-256 signature inside SoftHSM2 and, as
// the baseline of the same run, in Go: what a CA key in the token costs
// each certificate, CRL and OCSP responder certificate.
func BenchmarkSignP256(b *testing.B) {
	digest := sha256.Sum256([]byte("to be signed"))
	b.Run("softhsm2", func(b *testing.B) {
		tok, err := pkcs11.Open(softhsmtest.New(b))
		if err != nil {
			b.Fatal(err)
		}
		defer tok.Close()
		k, err := tok.Generate(keys.ECDSAP256, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("go", func(b *testing.B) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
