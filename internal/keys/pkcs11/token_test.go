//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/pkcs11"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

func open(t *testing.T, cfg pkcs11.Config) *pkcs11.Token {
	t.Helper()
	tok, err := pkcs11.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func verify(t *testing.T, pub crypto.PublicKey, msg, sig []byte) {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		var d []byte
		if k.Curve.Params().BitSize == 384 {
			h := sha512.Sum384(msg)
			d = h[:]
		} else {
			h := sha256.Sum256(msg)
			d = h[:]
		}
		if !ecdsa.VerifyASN1(k, d, sig) {
			t.Fatal("ECDSA signature made in the token does not verify")
		}
	case *rsa.PublicKey:
		h := sha256.Sum256(msg)
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig); err != nil {
			t.Fatalf("RSA signature made in the token does not verify: %v", err)
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			t.Fatal("Ed25519 signature made in the token does not verify")
		}
	default:
		t.Fatalf("unexpected key type %T", pub)
	}
}

func sign(t *testing.T, s crypto.Signer, msg []byte) []byte {
	t.Helper()
	var opts crypto.SignerOpts = crypto.SHA256
	digest := msg
	switch k := s.Public().(type) {
	case ed25519.PublicKey:
		opts = crypto.Hash(0)
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize == 384 {
			h := sha512.Sum384(msg)
			digest, opts = h[:], crypto.SHA384
		} else {
			h := sha256.Sum256(msg)
			digest = h[:]
		}
	default:
		h := sha256.Sum256(msg)
		digest = h[:]
	}
	sig, err := s.Sign(rand.Reader, digest, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestGenerateSignFind makes a key of every algorithm in the token, signs
// with it, and finds it again by its URI after the token was closed and
// opened again, as a restarted server does.
func TestGenerateSignFind(t *testing.T) {
	cfg := softhsmtest.New(t)
	uris := map[keys.Algorithm]pkcs11.URI{}
	pubs := map[keys.Algorithm]crypto.PublicKey{}
	tok := open(t, cfg)
	for _, alg := range keys.Algorithms() {
		k, err := tok.Generate(alg, "test-"+string(alg))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if got, err := keys.AlgorithmOf(k.Public()); err != nil || got != alg {
			t.Fatalf("%s: the token's public key is %v (%v)", alg, got, err)
		}
		verify(t, k.Public(), []byte("hello"), sign(t, k, []byte("hello")))
		uris[alg], pubs[alg] = k.URI(), k.Public()
	}
	tok.Close()

	tok = open(t, cfg)
	for alg, u := range uris {
		parsed, err := pkcs11.ParseURI(u.String())
		if err != nil {
			t.Fatal(err)
		}
		k, err := tok.Find(parsed)
		if err != nil {
			t.Fatalf("%s: Find(%s): %v", alg, u, err)
		}
		if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pubs[alg]) {
			t.Fatalf("%s: Find returned a different key", alg)
		}
		verify(t, k.Public(), []byte("again"), sign(t, k, []byte("again")))
	}
}

// TestCertificateSignedInToken has crypto/x509 sign a CA certificate with a
// token key, the way mica's issuance does.
func TestCertificateSignedInToken(t *testing.T) {
	tok := open(t, softhsmtest.New(t))
	k, err := tok.Generate(keys.ECDSAP256, "ca")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "token CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentSigning(t *testing.T) {
	cfg := softhsmtest.New(t)
	cfg.Sessions = 3
	tok := open(t, cfg)
	k, err := tok.Generate(keys.ECDSAP256, "busy")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 25 {
				h := sha256.Sum256([]byte("m"))
				sig, err := k.Sign(rand.Reader, h[:], crypto.SHA256)
				if err == nil && !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), h[:], sig) {
					err = errors.New("bad signature")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestOpenRefusals(t *testing.T) {
	cfg := softhsmtest.New(t)
	wrong := cfg
	wrong.PIN = "not-the-pin"
	if _, err := pkcs11.Open(wrong); err == nil || !strings.Contains(err.Error(), "PIN") {
		t.Errorf("wrong PIN: %v", err)
	}
	missing := cfg
	missing.Token = "no-such-token"
	if _, err := pkcs11.Open(missing); err == nil || !strings.Contains(err.Error(), "no token labelled") {
		t.Errorf("missing token: %v", err)
	}
	badModule := cfg
	badModule.Module = "/nonexistent/libnothing.so"
	if _, err := pkcs11.Open(badModule); err == nil || !strings.Contains(err.Error(), "cannot load") {
		t.Errorf("bad module: %v", err)
	}
	tok := open(t, cfg)
	if _, err := tok.Find(pkcs11.URI{Token: cfg.Token, ID: []byte{1, 2, 3}}); err == nil || !strings.Contains(err.Error(), "no private key") {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := tok.Find(pkcs11.URI{Token: "other", ID: []byte{1}}); err == nil || !strings.Contains(err.Error(), "is configured") {
		t.Errorf("other token: %v", err)
	}
}
