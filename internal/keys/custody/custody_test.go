package custody_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

var pass = []byte("custody test passphrase")

func signs(t *testing.T, k crypto.Signer) {
	t.Helper()
	h := sha256.Sum256([]byte("x"))
	if _, err := k.Sign(rand.Reader, h[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
}

func same(a, b crypto.PublicKey) bool { return a.(interface{ Equal(crypto.PublicKey) bool }).Equal(b) }

func TestSealed(t *testing.T) {
	k, err := custody.New(custody.Config{Backend: custody.File, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	s, ref, err := k.Generate(keys.ECDSAP256, "x")
	if err != nil {
		t.Fatal(err)
	}
	if ref.URI != "" || !strings.Contains(string(ref.Sealed), "ENCRYPTED PRIVATE KEY") {
		t.Fatalf("ref = %s, want a sealed key", ref)
	}
	again, err := k.Open(ref)
	if err != nil || !same(again.Public(), s.Public()) {
		t.Fatalf("Open: %v", err)
	}
	if _, err := custody.Sealed([]byte("wrong")).Open(ref); err == nil {
		t.Fatal("a wrong passphrase opened the key")
	}
	if _, err := k.Open(custody.Ref{URI: "pkcs11:token=t;id=%01"}); err == nil || !strings.Contains(err.Error(), "key_backend: pkcs11") {
		t.Fatalf("file backend opening a token key: %v", err)
	}
	if _, err := custody.New(custody.Config{Backend: custody.File}); err == nil {
		t.Fatal("file backend without a passphrase")
	}
	if _, err := custody.New(custody.Config{Backend: custody.KMS}); err == nil || !strings.Contains(err.Error(), "no KMS backend") {
		t.Fatalf("KMS: %v", err)
	}
	if _, err := custody.ParseBackend("vault"); err == nil {
		t.Fatal("ParseBackend accepted vault")
	}
}

// TestToken makes keys in a SoftHSM2 token, opens them by reference, and
// still opens keys sealed before the CA moved to the token.
func TestToken(t *testing.T) {
	cfg := softhsmtest.New(t)
	k, err := custody.New(custody.Config{Backend: custody.PKCS11, PKCS11: cfg, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	s, ref, err := k.Generate(keys.ECDSAP384, "mica-intermediate-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref.URI, "pkcs11:token="+cfg.Token) || ref.Sealed != nil {
		t.Fatalf("ref = %s", ref)
	}
	signs(t, s)
	again, err := k.Open(ref)
	if err != nil || !same(again.Public(), s.Public()) {
		t.Fatalf("Open: %v", err)
	}
	signs(t, again)
	old, oldRef, err := custody.Sealed(pass).Generate(keys.ECDSAP256, "")
	if err != nil {
		t.Fatal(err)
	}
	opened, err := k.Open(oldRef)
	if err != nil || !same(opened.Public(), old.Public()) {
		t.Fatalf("opening a sealed key with the token backend: %v", err)
	}
}
