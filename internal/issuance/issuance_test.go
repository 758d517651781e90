package issuance_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testlayer"
	"github.com/mica-pki/mica/internal/testpki"
)

var (
	oidSAN             = asn1.ObjectIdentifier{2, 5, 29, 17}
	bothEKU            = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	serverEKU          = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	fullIdentityString = "spiffe://example.org/ns/prod/sa/web,web.example.org,10.1.2.3,2001:db8::1"
)

func mustIdentity(t testing.TB, s string) identity.Identity {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newKey(t testing.TB, alg keys.Algorithm) crypto.Signer {
	t.Helper()
	k, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func request(t testing.TB, pub crypto.PublicKey, id identity.Identity) issuance.Request {
	now := time.Now()
	return issuance.Request{PublicKey: pub, Identity: id, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: bothEKU}
}

func verify(p *testpki.PKI, leaf *x509.Certificate) error {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: p.Roots(), Intermediates: p.Intermediates(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// opensslVerify runs the real openssl against root, intermediate and leaf
// files and returns its combined output and error. It belongs to the
// integration layer: call it in a subtest of its own, so that the rest of
// the test runs under -short.
func opensslVerify(t *testing.T, p *testpki.PKI, leaf *x509.Certificate) (string, error) {
	t.Helper()
	openssl := testlayer.Tool(t, "openssl")
	dir := t.TempDir()
	rootPath, intPath := p.WriteCA(t, dir)
	l := &testpki.Leaf{Cert: leaf, Key: newKey(t, keys.ECDSAP256)}
	leafPath, _ := l.Write(t, dir, "leaf")
	out, err := exec.Command(openssl, "verify", "-x509_strict", "-CAfile", rootPath, "-untrusted", intPath, leafPath).CombinedOutput()
	return string(out), err
}

func TestIssueEachAlgorithm(t *testing.T) {
	for _, alg := range keys.Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			p := testpki.New(t, "example.org", testpki.WithAlgorithm(alg))
			key := newKey(t, alg)
			id := mustIdentity(t, fullIdentityString)
			leaf, err := p.Issuer.Issue(request(t, key.Public(), id))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []*x509.Certificate{p.Root, p.Intermediate, leaf} {
				if err := issuance.Lint(c.Raw); err != nil {
					t.Errorf("%s is not lint-clean: %v", c.Subject, err)
				}
			}
			if err := verify(p, leaf); err != nil {
				t.Fatalf("crypto/x509 does not verify the leaf: %v", err)
			}
			t.Run("openssl", func(t *testing.T) {
				if out, err := opensslVerify(t, p, leaf); err != nil || !strings.Contains(out, "OK") {
					t.Fatalf("openssl verify: %v\n%s", err, out)
				}
			})

			got, err := identity.FromCertificate(leaf)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(id) {
				t.Errorf("identity = %s, want %s", got, id)
			}
			checkLeafProfile(t, p, leaf, alg)
		})
	}
}

func checkLeafProfile(t *testing.T, p *testpki.PKI, leaf *x509.Certificate, alg keys.Algorithm) {
	t.Helper()
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Error("leaf must carry basicConstraints CA:false")
	}
	if len(leaf.Subject.Names) != 0 {
		t.Errorf("subject = %q, want empty", leaf.Subject)
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidSAN) && !e.Critical {
			t.Error("SAN must be critical when the subject is empty")
		}
	}
	wantKU := x509.KeyUsageDigitalSignature
	if alg == keys.RSA3072 {
		wantKU |= x509.KeyUsageKeyEncipherment
	}
	if leaf.KeyUsage != wantKU {
		t.Errorf("KeyUsage = %b, want %b", leaf.KeyUsage, wantKU)
	}
	if len(leaf.SubjectKeyId) == 0 || !bytes.Equal(leaf.AuthorityKeyId, p.Intermediate.SubjectKeyId) {
		t.Error("leaf needs a SKI and an AKI naming the intermediate")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x: want positive, 64 to 128 bits", leaf.SerialNumber)
	}
	if len(leaf.URIs) != 1 {
		t.Errorf("leaf has %d URI SANs, want exactly 1", len(leaf.URIs))
	}
}

func TestNameConstraintsRejectForeignTrustDomain(t *testing.T) {
	p := testpki.New(t, "example.org")
	key := newKey(t, keys.ECDSAP256)

	// Issue refuses outright.
	_, err := p.Issuer.Issue(request(t, key.Public(), mustIdentity(t, "spiffe://evil.example/x")))
	if !errors.Is(err, issuance.ErrInvalidRequest) || !strings.Contains(err.Error(), "trust domain") {
		t.Fatalf("Issue err = %v, want ErrInvalidRequest about the trust domain", err)
	}

	// Had it been signed (here forced past Issue's own check), verifiers
	// would refuse it because of the intermediate's name constraints.
	issuance.SetTemplateHook(p.Issuer, func(c *x509.Certificate) {
		c.URIs = []*url.URL{spiffeid.RequireFromString("spiffe://evil.example/x").URL()}
	})
	leaf, err := p.Issuer.Issue(request(t, key.Public(), mustIdentity(t, "spiffe://example.org/x")))
	if err != nil {
		t.Fatal(err)
	}
	var inv x509.CertificateInvalidError
	if err := verify(p, leaf); !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("crypto/x509 err = %v, want CANotAuthorizedForThisName", err)
	}
	t.Run("openssl", func(t *testing.T) {
		if out, err := opensslVerify(t, p, leaf); err == nil {
			t.Errorf("openssl accepted a SPIFFE ID outside the trust domain:\n%s", out)
		} else if !strings.Contains(out, "permitted subtree violation") {
			t.Errorf("openssl refused for another reason:\n%s", out)
		}
	})
}

// countingSigner counts signatures so tests can prove nothing was signed.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, digest, opts)
}

func TestLintFailureRefusesBeforeSigning(t *testing.T) {
	tests := []struct {
		name     string
		hook     func(*x509.Certificate)
		wantLint string
		status   string
	}{
		{"certSign on a leaf", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }, "e_ext_key_usage_cert_sign_without_ca", "error"},
		{"subject with leading space", func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: " web"} }, "w_subject_dn_leading_whitespace", "warn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testpki.New(t, "example.org")
			signer := &countingSigner{Signer: p.IntermediateKey}
			iss, err := issuance.New(issuance.Config{Cert: p.Intermediate, Signer: signer})
			if err != nil {
				t.Fatal(err)
			}
			issuance.SetTemplateHook(iss, tt.hook)
			_, err = iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), p.ID(t, "/web")))
			var lerr *issuance.LintError
			if !errors.As(err, &lerr) {
				t.Fatalf("err = %v, want *LintError", err)
			}
			found := false
			for _, f := range lerr.Failures {
				if f.Lint == tt.wantLint && f.Status == tt.status {
					found = true
				}
			}
			if !found {
				t.Errorf("failures = %+v, want %s (%s)", lerr.Failures, tt.wantLint, tt.status)
			}
			if !strings.Contains(err.Error(), tt.wantLint) || !strings.HasPrefix(err.Error(), "issuance: ") {
				t.Errorf("message %q should start with the package and name the lint", err)
			}
			if n := signer.n.Load(); n != 0 {
				t.Errorf("the CA key signed %d times for a refused certificate", n)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	p := testpki.New(t, "example.org", testpki.WithPermittedDNSDomains("example.org"))
	good := newKey(t, keys.ECDSAP256).Public()
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	now := time.Now()
	id := p.ID(t, "/web")
	base := func() issuance.Request {
		return issuance.Request{PublicKey: good, Identity: id, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: serverEKU}
	}
	tests := []struct {
		name     string
		edit     func(*issuance.Request)
		contains string
	}{
		{"NotAfter beyond the issuer", func(r *issuance.Request) { r.NotAfter = p.Intermediate.NotAfter.Add(time.Hour) }, "after the issuing CA's NotAfter"},
		{"NotBefore before the issuer", func(r *issuance.Request) { r.NotBefore = p.Intermediate.NotBefore.Add(-time.Hour) }, "before the issuing CA's NotBefore"},
		{"NotAfter before NotBefore", func(r *issuance.Request) { r.NotAfter = r.NotBefore.Add(-time.Second) }, "is not after NotBefore"},
		{"zero times", func(r *issuance.Request) { r.NotBefore = time.Time{} }, "must both be set"},
		{"already expired", func(r *issuance.Request) { r.NotBefore, r.NotAfter = now.Add(-50*time.Minute), now.Add(-time.Minute) }, "in the past"},
		{"P-224 key", func(r *issuance.Request) { r.PublicKey = p224.Public() }, "P-224"},
		{"RSA-1024 key", func(r *issuance.Request) { r.PublicKey = rsa1024.Public() }, "1024-bit RSA"},
		{"no key", func(r *issuance.Request) { r.PublicKey = nil }, "no public key"},
		{"issuer's own key", func(r *issuance.Request) { r.PublicKey = p.Intermediate.PublicKey }, "issuing CA's own key"},
		{"no identity", func(r *issuance.Request) { r.Identity = identity.Identity{} }, "no SPIFFE ID"},
		{"no EKU", func(r *issuance.Request) { r.ExtKeyUsage = nil }, "no extended key usage"},
		{"any EKU", func(r *issuance.Request) { r.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }, "\"any\""},
		{"foreign trust domain", func(r *issuance.Request) { r.Identity = mustIdentity(t, "spiffe://other.org/web") }, "outside the issuing CA's trust domain"},
		{"DNS outside permitted", func(r *issuance.Request) { r.Identity.DNS = []string{"web.evil.example"} }, "outside the issuing CA's permitted DNS domains"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base()
			tt.edit(&req)
			cert, err := p.Issuer.Issue(req)
			if err == nil {
				t.Fatalf("issued %v; want a refusal", cert.Subject)
			}
			if !errors.Is(err, issuance.ErrInvalidRequest) {
				t.Errorf("err = %v, want ErrInvalidRequest", err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %q, want it to mention %q", err, tt.contains)
			}
		})
	}
	// A DNS name inside the permitted domain is fine, and a subdomain too.
	req := base()
	req.Identity.DNS = []string{"example.org", "web.example.org"}
	if _, err := p.Issuer.Issue(req); err != nil {
		t.Errorf("permitted DNS names refused: %v", err)
	}
}

func TestIssuerClock(t *testing.T) {
	p := testpki.New(t, "example.org")
	later := p.Intermediate.NotAfter.Add(time.Hour)
	iss, err := issuance.New(issuance.Config{Cert: p.Intermediate, Signer: p.IntermediateKey, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), p.ID(t, "/web")))
	if !errors.Is(err, issuance.ErrIssuerNotValid) {
		t.Fatalf("err = %v, want ErrIssuerNotValid", err)
	}
}

// zeroReader is a broken randomness source.
type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestIssuerRandomness(t *testing.T) {
	p := testpki.New(t, "example.org")
	iss, err := issuance.New(issuance.Config{Cert: p.Intermediate, Signer: p.IntermediateKey, Rand: zeroReader{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), p.ID(t, "/web")))
	if err == nil || !strings.Contains(err.Error(), "serial") {
		t.Fatalf("err = %v, want a refusal naming the serial number", err)
	}
	// Serial numbers from a working source differ.
	a := p.Leaf(t, p.ID(t, "/a"))
	b := p.Leaf(t, p.ID(t, "/a"))
	if a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
}

func TestURLsAndChain(t *testing.T) {
	p := testpki.New(t, "example.org")
	iss, err := issuance.New(issuance.Config{
		Cert: p.Intermediate, Signer: p.IntermediateKey,
		CRLURL: "http://ca.example.org/crl/1.crl", OCSPURL: "http://ca.example.org/ocsp",
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), p.ID(t, "/web")))
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != "http://ca.example.org/crl/1.crl" {
		t.Errorf("CRL DP = %v", leaf.CRLDistributionPoints)
	}
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != "http://ca.example.org/ocsp" {
		t.Errorf("OCSP = %v", leaf.OCSPServer)
	}
	if err := issuance.Lint(leaf.Raw); err != nil {
		t.Error(err)
	}
	chain := iss.Chain()
	if len(chain) != 1 || !bytes.Equal(chain[0], p.Intermediate.Raw) {
		t.Error("Chain must be the intermediate's DER")
	}
}

func TestNewRefusals(t *testing.T) {
	p := testpki.New(t, "example.org")
	leaf := p.Leaf(t, p.ID(t, "/web"))
	other := newKey(t, keys.ECDSAP256)
	tests := []struct {
		name     string
		cfg      issuance.Config
		contains string
	}{
		{"nothing", issuance.Config{}, "needs both"},
		{"leaf as issuer", issuance.Config{Cert: leaf.Cert, Signer: leaf.Key}, "not a CA certificate"},
		{"wrong key", issuance.Config{Cert: p.Intermediate, Signer: other}, "does not belong"},
		{"relative CRL URL", issuance.Config{Cert: p.Intermediate, Signer: p.IntermediateKey, CRLURL: "/crl"}, "CRL URL"},
		{"ldap OCSP URL", issuance.Config{Cert: p.Intermediate, Signer: p.IntermediateKey, OCSPURL: "ldap://x/"}, "OCSP URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := issuance.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.contains) || !strings.HasPrefix(err.Error(), "issuance: ") {
				t.Errorf("err = %v, want it to mention %q", err, tt.contains)
			}
		})
	}
}

func TestIPOnlyAndDNSOnlyLeaves(t *testing.T) {
	p := testpki.New(t, "example.org")
	tests := []struct {
		name string
		id   identity.Identity
	}{
		{"dns only", identity.Identity{DNS: []string{"db.internal.example"}}},
		{"ip only", identity.Identity{IPs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := p.Leaf(t, tt.id, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth))
			if err := verify(p, leaf.Cert); err != nil {
				t.Fatal(err)
			}
			if err := issuance.Lint(leaf.Cert.Raw); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLintNames(t *testing.T) {
	names, err := issuance.LintNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n, "emudhra") || n == "e_ecdsa_small_private_key" {
			t.Errorf("%s must not be in the per-leaf set", n)
		}
		if strings.HasPrefix(n, "e_sub_cert_") || strings.HasPrefix(n, "n_") && strings.Contains(n, "cab") {
			t.Errorf("CA/Browser Forum lint %s selected", n)
		}
	}
	if len(names) < 100 {
		t.Errorf("only %d lints selected; the RFC and community sources have far more", len(names))
	}
}

// Every key type a profile may allow (policy's key_types) is one the issuer
// certifies, lint included: a request policy accepts never ends in a 500.
func TestCertifiesEveryKeyTypePolicyOffers(t *testing.T) {
	p := testpki.New(t, "example.org")
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa4096, _ := rsa.GenerateKey(rand.Reader, 4096)
	now := time.Now()
	for name, pub := range map[string]crypto.PublicKey{
		"ecdsa-p256": newKey(t, keys.ECDSAP256).Public(), "ecdsa-p384": newKey(t, keys.ECDSAP384).Public(),
		"ecdsa-p521": p521.Public(), "ed25519": newKey(t, keys.Ed25519).Public(),
		"rsa-2048": rsa2048.Public(), "rsa-4096": rsa4096.Public(),
	} {
		t.Run(name, func(t *testing.T) {
			cert, err := p.Issuer.Issue(issuance.Request{PublicKey: pub, Identity: p.ID(t, "/k"),
				NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: serverEKU})
			if err != nil {
				t.Fatalf("%s key refused: %v", name, err)
			}
			if _, isRSA := pub.(*rsa.PublicKey); isRSA != (cert.KeyUsage&x509.KeyUsageKeyEncipherment != 0) {
				t.Errorf("keyEncipherment = %v for %s", !isRSA, name)
			}
		})
	}
}
