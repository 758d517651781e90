package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

// newTokenTestEnv is newTestEnv with the CA keys made inside a fresh
// SoftHSM2 token by `mica init --key-backend pkcs11`.
func newTokenTestEnv(t *testing.T, engine string) *testEnv {
	t.Helper()
	tok := softhsmtest.New(t)
	settings := custody.Settings{Backend: custody.PKCS11, PKCS11: &custody.PKCS11Settings{Module: tok.Module, Token: tok.Token}}
	e := &testEnv{t: t, root: t, dataDir: filepath.Join(t.TempDir(), "data"), engine: engine}
	db := `""`
	if engine == "postgres" {
		db = pgCluster.Database(t)
		e.dbURL = db
	}
	e.env = []string{"MICA_PASSPHRASE=" + testPassphrase, "MICA_DATA_DIR=" + e.dataDir, custody.PINEnv + "=" + tok.PIN}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(testConfig, "%DB%", db, 1) + settingsYAML(settings)
	if err := os.WriteFile(filepath.Join(e.dataDir, configFileName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.micaOK("init", "--trust-domain", "example.org", "--key-backend", "pkcs11", "--pkcs11-module", tok.Module, "--pkcs11-token", tok.Token)
	e.start()
	return e
}

// TestPKCS11 runs mica with both CA keys inside a SoftHSM2 token: init
// leaves no key file, and issuance, the CRL and OCSP (whose responder
// certificate the intermediate signs) all work with the key in the token.
func TestPKCS11(t *testing.T) {
	e := newTokenTestEnv(t, "sqlite")
	for _, name := range []string{"root.key", "intermediate.key"} {
		if _, err := os.Stat(filepath.Join(e.dataDir, "ca", name)); err == nil {
			t.Errorf("ca/%s exists: a key in the token leaves no key file", name)
		}
		if data, err := os.ReadFile(filepath.Join(e.dataDir, "ca", name+".uri")); err != nil || !strings.HasPrefix(string(data), "pkcs11:") {
			t.Errorf("ca/%s.uri: %q %v", name, data, err)
		}
	}
	t.Run("IssueAndVerify", e.testIssueAndVerify)
	t.Run("RevocationOpenSSL", e.testRevocationOpenSSL)
	t.Run("CRLSignedInToken", func(t *testing.T) {
		dir := e.issue("spiffe://example.org/billing/crl-token", "service")
		der := e.fetchCRL(t, dir)
		list, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		chain := readChain(t, dir)
		if err := list.CheckSignatureFrom(chain[0]); err != nil {
			t.Fatalf("the CRL is not signed by the intermediate whose key is in the token: %v", err)
		}
	})
	t.Run("AuditKeyInToken", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(e.dataDir, "audit.key")); err == nil {
			t.Error("audit.key exists: with key_backend pkcs11 the audit log's key is made in the token")
		}
		if data, err := os.ReadFile(filepath.Join(e.dataDir, "audit.key.uri")); err != nil || !strings.HasPrefix(string(data), "pkcs11:") {
			t.Fatalf("audit.key.uri: %q %v", data, err)
		}
		// Checkpoints signed in the token (Ed25519, CKM_EDDSA) verify.
		saved := filepath.Join(t.TempDir(), "checkpoint.txt")
		if err := os.WriteFile(saved, []byte(e.micaOK("audit", "checkpoint")), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := e.micaOK("audit", "verify", "--checkpoint", saved); !strings.Contains(out, "verified") {
			t.Fatalf("audit verify: %q", out)
		}
	})
	t.Run("WithoutPIN", func(t *testing.T) {
		var env []string
		for _, kv := range e.env {
			if !strings.HasPrefix(kv, custody.PINEnv+"=") {
				env = append(env, kv)
			}
		}
		r := mica(t, env, "serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--metrics-listen", "off")
		if r.code == 0 || !strings.Contains(r.stderr, custody.PINEnv) {
			t.Fatalf("serve without the PIN: exit %d, %s", r.code, r.stderr)
		}
	})
}

func readChain(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, chainFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := credential.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}
