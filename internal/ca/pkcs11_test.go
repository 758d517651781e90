package ca_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

func tokenKeys(t *testing.T) custody.Keys {
	t.Helper()
	k, err := custody.New(custody.Config{Backend: custody.PKCS11, PKCS11: softhsmtest.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestInitInToken makes a whole hierarchy with both keys inside a SoftHSM2
// token: the data directory holds only the keys' URIs, and a server that
// loads it issues with the key in the token.
func TestInitInToken(t *testing.T) {
	k := tokenKeys(t)
	dir := t.TempDir()
	h, err := ca.Init(dir, ca.InitConfig{TrustDomain: td, Algorithm: keys.ECDSAP256, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ca.RootKeyFile, ca.IntermediateKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s was written: a key in a token must leave no key file", name)
		}
		data, err := os.ReadFile(filepath.Join(dir, name+".uri"))
		if err != nil || !strings.HasPrefix(string(data), "pkcs11:token=") {
			t.Errorf("%s.uri = %q, %v", name, data, err)
		}
	}
	loaded, err := ca.LoadKeys(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Intermediate.Equal(h.Intermediate) {
		t.Fatal("loaded another intermediate")
	}
	issueAndVerify(t, loaded, "spiffe://example.org/in-token")
	if _, err := ca.Load(dir, pass); err == nil || !strings.Contains(err.Error(), "key_backend: pkcs11") {
		t.Fatalf("loading a token CA with the file backend: %v", err)
	}
}

// TestOfflineRootInToken is the offline-root ceremony with the root key in
// a token: the root machine signs the server's intermediate with it.
func TestOfflineRootInToken(t *testing.T) {
	k := tokenKeys(t)
	rootDir, serverDir := t.TempDir(), t.TempDir()
	root, err := ca.InitRootOnly(rootDir, ca.InitConfig{TrustDomain: td, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := ca.RequestIntermediate(serverDir, ca.InitConfig{TrustDomain: td, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	gotRoot, rootKey, err := ca.LoadRootKeys(rootDir, k)
	if err != nil {
		t.Fatal(err)
	}
	if !gotRoot.Equal(root) {
		t.Fatal("another root")
	}
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.SignIntermediate(root, rootKey, csr, ca.IntermediateConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Fatal(err)
	}
}
