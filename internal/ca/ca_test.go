package ca_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/file"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	pass     = []byte("test passphrase")
	oidNC    = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidBC    = asn1.ObjectIdentifier{2, 5, 29, 19}
	yearSlop = 2 * time.Hour
)

func extCritical(c *x509.Certificate, oid asn1.ObjectIdentifier) (present, critical bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true, e.Critical
		}
	}
	return false, false
}

func issueAndVerify(t *testing.T, h *ca.Hierarchy, spiffe string) {
	t.Helper()
	iss, err := issuance.New(issuance.Config{Cert: h.Intermediate, Signer: h.IntermediateKey})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	id, _ := identity.Parse(spiffe)
	now := time.Now()
	leaf, err := iss.Issue(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: now, NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(h.Root)
	inters.AddCert(h.Intermediate)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
}

func TestInitEachAlgorithm(t *testing.T) {
	for _, alg := range keys.Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			h, err := ca.Init(dir, ca.InitConfig{TrustDomain: td, Algorithm: alg, Passphrase: pass})
			if err != nil {
				t.Fatal(err)
			}
			root, inter := h.Root, h.Intermediate

			if got, _ := keys.AlgorithmOf(root.PublicKey); got != alg {
				t.Errorf("root key is %s, want %s", got, alg)
			}
			if !root.IsCA || root.MaxPathLen != 2 || root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("root: IsCA=%v MaxPathLen=%d KeyUsage=%b", root.IsCA, root.MaxPathLen, root.KeyUsage)
			}
			if root.Subject.CommonName != "example.org Root CA" || len(root.Subject.Organization) != 1 || root.Subject.Organization[0] != "mica" {
				t.Errorf("root subject = %q", root.Subject)
			}
			if d := root.NotAfter.Sub(root.NotBefore); d < ca.DefaultRootValidity || d > ca.DefaultRootValidity+yearSlop {
				t.Errorf("root validity = %s", d)
			}
			if len(root.SubjectKeyId) == 0 {
				t.Error("root has no SKI")
			}

			if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
				t.Errorf("intermediate: IsCA=%v MaxPathLen=%d zero=%v", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
			}
			if len(inter.PermittedURIDomains) != 1 || inter.PermittedURIDomains[0] != "example.org" {
				t.Errorf("permitted URI domains = %v", inter.PermittedURIDomains)
			}
			if ok, crit := extCritical(inter, oidNC); !ok || !crit {
				t.Errorf("name constraints present=%v critical=%v, want critical", ok, crit)
			}
			for _, c := range []*x509.Certificate{root, inter} {
				if ok, crit := extCritical(c, oidBC); !ok || !crit {
					t.Errorf("%s: basicConstraints must be critical", c.Subject.CommonName)
				}
				if err := issuance.Lint(c.Raw); err != nil {
					t.Errorf("%s: %v", c.Subject.CommonName, err)
				}
			}
			if string(inter.AuthorityKeyId) != string(root.SubjectKeyId) || len(inter.SubjectKeyId) == 0 {
				t.Error("intermediate needs AKI = root SKI, and a SKI")
			}
			if d := inter.NotAfter.Sub(inter.NotBefore); d < ca.DefaultIntermediateValidity || d > ca.DefaultIntermediateValidity+yearSlop {
				t.Errorf("intermediate validity = %s", d)
			}

			for _, name := range []string{ca.RootKeyFile, ca.IntermediateKeyFile} {
				st, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("%s mode = %04o, want 0600", name, st.Mode().Perm())
				}
			}

			loaded, err := ca.Load(dir, pass)
			if err != nil {
				t.Fatal(err)
			}
			if !loaded.Intermediate.Equal(inter) || !loaded.Root.Equal(root) {
				t.Error("Load returned different certificates")
			}
			issueAndVerify(t, loaded, "spiffe://example.org/ns/prod/sa/web")
		})
	}
}

func TestOfflineRootFlow(t *testing.T) {
	base := t.TempDir()
	rootDir, srvDir := filepath.Join(base, "root"), filepath.Join(base, "server")
	cfg := ca.InitConfig{TrustDomain: td, Passphrase: pass}

	root, err := ca.InitRootOnly(rootDir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(rootDir, ca.IntermediateKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("InitRootOnly made an intermediate")
	}

	csrPEM, err := ca.RequestIntermediate(srvDir, ca.InitConfig{TrustDomain: td, Passphrase: []byte("server passphrase")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Load(srvDir, []byte("server passphrase")); !errors.Is(err, ca.ErrPending) || !strings.Contains(err.Error(), "mica ca import-intermediate") {
		t.Errorf("Load while pending: err = %v, want ErrPending with what to run", err)
	}

	// On the root machine.
	rootCert, rootKey, err := ca.LoadRoot(rootDir, pass)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.SignIntermediate(rootCert, rootKey, csr, ca.IntermediateConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	interPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw})

	// Back on the server: root.pem must be copied over first.
	if _, err := ca.ImportIntermediate(srvDir, interPEM); !errors.Is(err, ca.ErrNotInitialized) || !strings.Contains(err.Error(), "copy root.pem") {
		t.Fatalf("import without root.pem: err = %v", err)
	}
	rootPEM, _ := os.ReadFile(filepath.Join(rootDir, ca.RootCertFile))
	if err := os.WriteFile(filepath.Join(srvDir, ca.RootCertFile), rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	// A certificate for another key is refused.
	otherKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	otherCSRDER, _ := ca.NewIntermediateCSR(otherKey, ca.IntermediateConfig{TrustDomain: td})
	otherCSR, _ := x509.ParseCertificateRequest(otherCSRDER)
	otherInter, err := ca.SignIntermediate(rootCert, rootKey, otherCSR, ca.IntermediateConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ImportIntermediate(srvDir, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherInter.Raw})); err == nil || !strings.Contains(err.Error(), "not for the pending key") {
		t.Fatalf("import of a certificate for another key: err = %v", err)
	}

	// A certificate from another root is refused.
	strangerDir := filepath.Join(base, "stranger")
	if _, err := ca.InitRootOnly(strangerDir, cfg); err != nil {
		t.Fatal(err)
	}
	sRoot, sKey, _ := ca.LoadRoot(strangerDir, pass)
	strangerInter, err := ca.SignIntermediate(sRoot, sKey, csr, ca.IntermediateConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ImportIntermediate(srvDir, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: strangerInter.Raw})); err == nil || !strings.Contains(err.Error(), "was not signed by root") {
		t.Fatalf("import of a certificate from another root: err = %v", err)
	}

	if _, err := ca.ImportIntermediate(srvDir, interPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srvDir, ca.IntermediateCSRFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("the request is still there after import")
	}
	if _, err := ca.ImportIntermediate(srvDir, interPEM); !errors.Is(err, ca.ErrExists) {
		t.Errorf("second import: err = %v, want ErrExists", err)
	}

	h, err := ca.Load(srvDir, []byte("server passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if !h.Root.Equal(root) {
		t.Error("server root differs")
	}
	if _, _, err := ca.LoadRoot(srvDir, []byte("server passphrase")); !errors.Is(err, ca.ErrNoRootKey) {
		t.Errorf("LoadRoot on the server: err = %v, want ErrNoRootKey", err)
	}
	issueAndVerify(t, h, "spiffe://example.org/batch/job")
}

func TestDirectoryRefusals(t *testing.T) {
	dir := t.TempDir()
	if _, err := ca.Init(dir, ca.InitConfig{TrustDomain: td, Passphrase: pass}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		run      func() error
		is       error
		contains string
	}{
		{"init twice", func() error { _, err := ca.Init(dir, ca.InitConfig{TrustDomain: td, Passphrase: pass}); return err }, ca.ErrExists, "root.pem exists"},
		{"root only over a CA", func() error {
			_, err := ca.InitRootOnly(dir, ca.InitConfig{TrustDomain: td, Passphrase: pass})
			return err
		}, ca.ErrExists, "exists"},
		{"request over a CA", func() error {
			_, err := ca.RequestIntermediate(dir, ca.InitConfig{TrustDomain: td, Passphrase: pass})
			return err
		}, ca.ErrExists, "exists"},
		{"wrong passphrase", func() error { _, err := ca.Load(dir, []byte("nope")); return err }, file.ErrWrongPassphrase, "intermediate.key"},
		{"empty dir", func() error { _, err := ca.Load(t.TempDir(), pass); return err }, ca.ErrNotInitialized, "mica init"},
		{"no passphrase", func() error { _, err := ca.Init(t.TempDir(), ca.InitConfig{TrustDomain: td}); return err }, nil, "passphrase is required"},
		{"no trust domain", func() error { _, err := ca.Init(t.TempDir(), ca.InitConfig{Passphrase: pass}); return err }, nil, "TrustDomain is required"},
		{"bad algorithm", func() error {
			_, err := ca.Init(t.TempDir(), ca.InitConfig{TrustDomain: td, Passphrase: pass, Algorithm: "dsa"})
			return err
		}, keys.ErrUnsupported, "dsa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if err == nil {
				t.Fatal("want an error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.contains) || !strings.HasPrefix(err.Error(), "ca: ") {
				t.Errorf("err = %q, want a ca: error mentioning %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), string(pass)) {
				t.Errorf("err = %q leaks the passphrase", err)
			}
		})
	}
}

func TestSignIntermediateRefusals(t *testing.T) {
	rootKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	interKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	csrDER, _ := ca.NewIntermediateCSR(interKey, ca.IntermediateConfig{TrustDomain: td})
	csr, _ := x509.ParseCertificateRequest(csrDER)
	tampered, _ := x509.ParseCertificateRequest(csrDER)
	tampered.Signature = append([]byte(nil), tampered.Signature...)
	tampered.Signature[len(tampered.Signature)-1] ^= 1
	otherKey, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	rootCSRDER, _ := ca.NewIntermediateCSR(rootKey, ca.IntermediateConfig{TrustDomain: td})
	rootCSR, _ := x509.ParseCertificateRequest(rootCSRDER)

	tests := []struct {
		name     string
		key      crypto.Signer
		csr      *x509.CertificateRequest
		cfg      ca.IntermediateConfig
		contains string
	}{
		{"outlives the root", rootKey, csr, ca.IntermediateConfig{TrustDomain: td}, "would outlive the root"},
		{"bad CSR signature", rootKey, tampered, ca.IntermediateConfig{TrustDomain: td, Validity: time.Hour}, "does not verify"},
		{"no trust domain", rootKey, csr, ca.IntermediateConfig{Validity: time.Hour}, "TrustDomain is required"},
		{"wrong root key", otherKey, csr, ca.IntermediateConfig{TrustDomain: td, Validity: time.Hour}, "does not belong to root"},
		{"root's own key", rootKey, rootCSR, ca.IntermediateConfig{TrustDomain: td, Validity: time.Hour}, "root's own key"},
		{"bad DNS constraint", rootKey, csr, ca.IntermediateConfig{TrustDomain: td, Validity: time.Hour, PermittedDNSDomains: []string{"bad_domain!"}}, "not a domain name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.SignIntermediate(root, tt.key, tt.csr, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %v, want it to mention %q", err, tt.contains)
			}
		})
	}
}

func TestIntermediateDNSAndIPConstraints(t *testing.T) {
	rootKey, _ := keys.Generate(keys.ECDSAP384, rand.Reader)
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	interKey, _ := keys.Generate(keys.ECDSAP384, rand.Reader)
	cfg := ca.IntermediateConfig{
		TrustDomain:         td,
		PermittedDNSDomains: []string{"Internal.Example", "svc.example"},
		PermittedIPRanges:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
	}
	csrDER, _ := ca.NewIntermediateCSR(interKey, cfg)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	inter, err := ca.SignIntermediate(root, rootKey, csr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inter.PermittedDNSDomains, ","); got != "internal.example,svc.example" {
		t.Errorf("permitted DNS = %s", got)
	}
	if len(inter.PermittedIPRanges) != 2 || inter.PermittedIPRanges[0].String() != "10.0.0.0/8" {
		t.Errorf("permitted IPs = %v", inter.PermittedIPRanges)
	}
	if err := issuance.Lint(inter.Raw); err != nil {
		t.Error(err)
	}
	issueAndVerify(t, &ca.Hierarchy{Root: root, Intermediate: inter, IntermediateKey: interKey}, "spiffe://example.org/x,api.internal.example,10.9.8.7")
	// The URI form of a constraint (a leading dot) is refused, as
	// verifiers refuse it in a dNSName constraint.
	cfg.PermittedDNSDomains = []string{".svc.example"}
	if _, err := ca.NewIntermediateCSR(interKey, cfg); err == nil {
		if _, err := ca.SignIntermediate(root, rootKey, csr, cfg); err == nil {
			t.Error("a permitted DNS domain with a leading dot was accepted")
		}
	}
}
