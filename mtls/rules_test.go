package mtls_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
)

// crafted is a root, an intermediate and a leaf made with crypto/x509
// directly, from templates a test edits before they are signed: the way to
// make the certificates mica's issuance refuses to.
type crafted struct {
	root, inter, leaf          *x509.Certificate
	rootKey, interKey, leafKey crypto.Signer
	// extra certificates the peer presents after the intermediate
	extra []*x509.Certificate
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serialNumber(t *testing.T) *big.Int {
	t.Helper()
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return sn.Add(sn, big.NewInt(1))
}

// craft makes a valid path (root → intermediate → leaf, the leaf a
// clientAuth certificate for spiffe://example.org/billing/worker and
// svc.example.org), with edit applied to the templates first.
func craft(t *testing.T, edit func(c *crafted)) *crafted {
	t.Helper()
	now := time.Now()
	spiffe, _ := url.Parse("spiffe://example.org/billing/worker")
	c := &crafted{rootKey: newKey(t), interKey: newKey(t), leafKey: newKey(t),
		root: &x509.Certificate{SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: "Crafted Root"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), BasicConstraintsValid: true, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		inter: &x509.Certificate{SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: "Crafted Intermediate"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), BasicConstraintsValid: true, IsCA: true,
			MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		leaf: &x509.Certificate{SerialNumber: serialNumber(t), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			URIs: []*url.URL{spiffe}, DNSNames: []string{"svc.example.org"}},
	}
	if edit != nil {
		edit(c)
	}
	sign := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	c.root = sign(c.root, c.root, c.rootKey.Public(), c.rootKey)
	c.inter = sign(c.inter, c.root, c.interKey.Public(), c.rootKey)
	c.leaf = sign(c.leaf, c.inter, c.leafKey.Public(), c.interKey)
	return c
}

func (c *crafted) presented() []*x509.Certificate {
	return append([]*x509.Certificate{c.leaf, c.inter}, c.extra...)
}

func (c *crafted) verifier(t *testing.T, cfg mtls.VerifierConfig) *mtls.Verifier {
	t.Helper()
	if cfg.Roots == nil {
		cfg.Roots = mtls.StaticRoots(c.root)
	}
	if cfg.Authorize == nil {
		cfg.Authorize = mtls.AuthorizeTrustDomains("example.org")
	}
	if cfg.Usages == nil {
		cfg.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	v, err := mtls.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRules: each rule beyond crypto/x509 refuses the certificate that
// breaks it, and only that one (the unedited path passes). The rules the
// x509-limbo corpus tests on its own vectors are checked in TestLimbo.
func TestRules(t *testing.T) {
	iap, _ := asn1.Marshal(0)
	tests := []struct {
		rule string // "" for a path that passes
		edit func(t *testing.T, c *crafted)
	}{
		{"", func(*testing.T, *crafted) {}},
		{"", func(_ *testing.T, c *crafted) { // a CN that is one of the SANs is fine
			c.leaf.Subject = pkix.Name{CommonName: "svc.example.org"}
		}},
		{"too-many-certificates", func(_ *testing.T, c *crafted) {
			for range 15 {
				c.extra = append(c.extra, c.root)
			}
		}},
		{"too-many-names", func(_ *testing.T, c *crafted) {
			for i := range 1024 {
				c.leaf.DNSNames = append(c.leaf.DNSNames, fmt.Sprintf("n%d.example.org", i))
			}
		}},
		{"name-constraints-too-many", func(_ *testing.T, c *crafted) {
			for i := range 257 {
				c.inter.PermittedDNSDomains = append(c.inter.PermittedDNSDomains, fmt.Sprintf("d%d.example.org", i))
			}
			c.inter.PermittedDNSDomains = append(c.inter.PermittedDNSDomains, "example.org")
			c.inter.PermittedURIDomains = []string{"example.org"}
		}},
		{"name-constraints-invalid-dns", func(_ *testing.T, c *crafted) {
			c.inter.PermittedDNSDomains = []string{".example.org"} // subdomains of example.org, in the URI form
			c.inter.PermittedURIDomains = []string{"example.org"}
		}},
		{"inhibit-any-policy-noncritical", func(_ *testing.T, c *crafted) {
			c.inter.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 54}, Value: iap}}
		}},
		{"aki-malformed", func(_ *testing.T, c *crafted) {
			// keyIdentifier [0] and a field [3] that AuthorityKeyIdentifier
			// does not have (crypto/x509 reads [0] and ignores the rest).
			c.leaf.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 35}, Value: []byte{0x30, 6, 0x80, 1, 1, 0x83, 1, 2}}}
		}},
		{"aki-ski-mismatch", func(_ *testing.T, c *crafted) {
			c.leaf.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 35}, Value: []byte{0x30, 3, 0x80, 1, 1}}}
		}},
		{"key-algorithm", func(t *testing.T, c *crafted) {
			k, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			c.leafKey = k
		}},
		{"ee-is-ca", func(_ *testing.T, c *crafted) { c.leaf.IsCA = true }},
		{"ee-key-cert-sign", func(_ *testing.T, c *crafted) { c.leaf.KeyUsage |= x509.KeyUsageCertSign }},
		{"ee-any-eku", func(_ *testing.T, c *crafted) {
			c.leaf.ExtKeyUsage = append(c.leaf.ExtKeyUsage, x509.ExtKeyUsageAny)
		}},
		{"cn-not-in-san", func(_ *testing.T, c *crafted) { c.leaf.Subject = pkix.Name{CommonName: "other.example.org"} }},
		{"serial-too-long", func(_ *testing.T, c *crafted) {
			c.leaf.SerialNumber = new(big.Int).Lsh(big.NewInt(1), 20*8) // 21 octets
		}},
		{"serial-not-positive", func(_ *testing.T, c *crafted) { c.leaf.SerialNumber = big.NewInt(0) }},
		{"anchor-eku", func(_ *testing.T, c *crafted) { c.root.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }},
		{"ca-without-key-cert-sign", func(_ *testing.T, c *crafted) {
			// A key usage extension that asserts no bit: crypto/x509
			// reads it as absent and lets the root sign.
			c.root.KeyUsage = 0
			c.root.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: []byte{0x03, 0x01, 0x00}}}
		}},
	}
	for _, tt := range tests {
		name := tt.rule
		if name == "" {
			name = "valid"
		}
		t.Run(name, func(t *testing.T) {
			c := craft(t, func(c *crafted) { tt.edit(t, c) })
			_, err := c.verifier(t, mtls.VerifierConfig{}).Verify(c.presented(), mtls.VerifyOptions{})
			var rej *mtls.RejectError
			switch {
			case tt.rule == "" && err != nil:
				t.Fatalf("a valid path was refused: %v", err)
			case tt.rule == "":
			case !errors.As(err, &rej) || rej.Rule != tt.rule:
				t.Fatalf("got %v, want a refusal by rule %s", err, tt.rule)
			case rej.Reason.Class() != "chain":
				t.Errorf("reason %s is of class %q, want chain", rej.Reason, rej.Reason.Class())
			}
		})
	}
}

// TestMicaCertificatesPassEveryRule: what mica's own CA issues, for every
// key algorithm it offers and every kind of name, passes every rule.
func TestMicaCertificatesPassEveryRule(t *testing.T) {
	for _, alg := range keys.Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			pki := testpki.New(t, "example.org", testpki.WithAlgorithm(alg), testpki.WithPermittedDNSDomains("svc.example.org"))
			id := pki.ID(t, "/billing/worker")
			id.DNS = []string{"api.svc.example.org"}
			id.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.7")}
			leaf := pki.Leaf(t, id, testpki.WithKeyAlgorithm(alg))
			v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: mtls.StaticRoots(pki.Root), Authorize: mtls.AuthorizeIDs("10.0.0.7"),
				Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := v.Verify([]*x509.Certificate{leaf.Cert, pki.Intermediate}, mtls.VerifyOptions{})
			if err != nil {
				t.Fatalf("mica's own certificate is refused: %v", err)
			}
			if len(p.Chain) != 3 || !p.Chain[2].Equal(pki.Root) || !p.Identity.Equal(id) {
				t.Errorf("peer %v with a chain of %d", p.Identity, len(p.Chain))
			}
		})
	}
}

// TestReasonClasses: every reason has its class, and refusals of
// different kinds are told apart.
func TestReasonClasses(t *testing.T) {
	want := map[string][]mtls.Reason{
		"chain": {mtls.ReasonNoCertificate, mtls.ReasonUnknownCA, mtls.ReasonExpired, mtls.ReasonNotYetValid, mtls.ReasonWrongEKU,
			mtls.ReasonNameConstraints, mtls.ReasonBadChain, mtls.ReasonInvalidCertificate, mtls.ReasonWeakKey},
		"identity":   {mtls.ReasonBadIdentity},
		"policy":     {mtls.ReasonNotPinned, mtls.ReasonUnauthorized},
		"revocation": {mtls.ReasonRevokedFeed, mtls.ReasonDenied, mtls.ReasonRevokedCRL, mtls.ReasonCRLUnavailable},
		"":           {mtls.ReasonOK},
	}
	n := 0
	for class, rs := range want {
		for _, r := range rs {
			n++
			if r.Class() != class {
				t.Errorf("%s is of class %q, want %q", r, r.Class(), class)
			}
		}
	}
	if n != len(mtls.Reasons()) {
		t.Errorf("%d reasons classified, %d exist", n, len(mtls.Reasons()))
	}
}

// TestVerify: the standalone verifier needs no TLS connection and no
// credential of its own, and each call may choose its usage and
// authorizer.
func TestVerify(t *testing.T) {
	pki := testpki.New(t, "example.org")
	leaf := pki.Leaf(t, pki.ID(t, "/billing/worker"), testpki.WithExtKeyUsage(x509.ExtKeyUsageClientAuth))
	chain := []*x509.Certificate{leaf.Cert, pki.Intermediate}
	metrics, reg := newMetrics(t)
	v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: mtls.StaticRoots(pki.Root), Authorize: mtls.AuthorizeTrustDomains("example.org"),
		Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(chain, mtls.VerifyOptions{}); err == nil || !strings.Contains(err.Error(), "extended key usage") {
		t.Fatalf("Verify without a usage: %v, want an error asking for one", err)
	}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p, err := v.Verify(chain, mtls.VerifyOptions{Usages: client})
	if err != nil || p.Identity.SPIFFE.String() != "spiffe://example.org/billing/worker" || p.Serial != leaf.Cert.SerialNumber.Text(16) {
		t.Fatalf("Verify: %+v, %v", p, err)
	}
	if _, err := v.Verify(chain, mtls.VerifyOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); rejectReason(err) != mtls.ReasonWrongEKU {
		t.Errorf("a clientAuth leaf verified for serverAuth: %v", err)
	}
	if _, err := v.Verify(chain, mtls.VerifyOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("ExtKeyUsageAny: %v", err)
	}
	if _, err := v.Verify(chain, mtls.VerifyOptions{Usages: client, Authorize: mtls.AuthorizeIDs("spiffe://example.org/other")}); rejectReason(err) != mtls.ReasonUnauthorized {
		t.Errorf("the call's authorizer was not used: %v", err)
	}
	if _, err := v.Verify(nil, mtls.VerifyOptions{Usages: client}); rejectReason(err) != mtls.ReasonNoCertificate {
		t.Errorf("no certificate: %v", err)
	}
	if n := handshakes(t, reg, mtls.SideVerify, mtls.ReasonOK); n != 2 {
		t.Errorf("mica_mtls_handshakes_total{side=verify,reason=ok} = %v, want 2", n)
	}
	if _, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: mtls.StaticRoots(pki.Root), Authorize: mtls.AuthorizeTrustDomains("example.org"),
		CRLPolicy: mtls.CRLHardFail}); err == nil {
		t.Error("a hard-fail Verifier without a CRLChecker was made")
	}
}

// TestPinnedCAs: pinning the root accepts every intermediate under it,
// across a rotation; pinning an intermediate accepts only its peers.
func TestPinnedCAs(t *testing.T) {
	pki := testpki.New(t, "example.org")
	other := testpki.New(t, "example.org")
	leaf := pki.Leaf(t, pki.ID(t, "/billing/worker"))
	roots := mtls.StaticRoots(pki.Root, other.Root)
	// A second intermediate under the same root: what a rotation makes.
	rotated := craftIntermediate(t, pki)
	rotatedLeaf := issueUnder(t, rotated, pki.IntermediateKey, "spiffe://example.org/billing/worker")
	verify := func(pins []mtls.SPKIPin, chain ...*x509.Certificate) error {
		v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: roots, Authorize: mtls.AuthorizeTrustDomains("example.org"),
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, PinnedCAs: pins})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(chain, mtls.VerifyOptions{})
		return err
	}
	rootPin, interPin, otherPin := mtls.PinOf(pki.Root), mtls.PinOf(pki.Intermediate), mtls.PinOf(other.Root)
	tests := []struct {
		name  string
		pins  []mtls.SPKIPin
		chain []*x509.Certificate
		want  mtls.Reason
	}{
		{"root pinned", []mtls.SPKIPin{rootPin}, []*x509.Certificate{leaf.Cert, pki.Intermediate}, mtls.ReasonOK},
		{"root pinned, rotated intermediate", []mtls.SPKIPin{rootPin}, []*x509.Certificate{rotatedLeaf, rotated}, mtls.ReasonOK},
		{"intermediate pinned", []mtls.SPKIPin{interPin}, []*x509.Certificate{leaf.Cert, pki.Intermediate}, mtls.ReasonOK},
		{"intermediate pinned, same key re-issued", []mtls.SPKIPin{interPin}, []*x509.Certificate{rotatedLeaf, rotated}, mtls.ReasonOK},
		{"another root pinned", []mtls.SPKIPin{otherPin}, []*x509.Certificate{leaf.Cert, pki.Intermediate}, mtls.ReasonNotPinned},
		{"leaf key pinned is no CA pin", []mtls.SPKIPin{mtls.PinOf(leaf.Cert)}, []*x509.Certificate{leaf.Cert, pki.Intermediate}, mtls.ReasonNotPinned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.pins, tt.chain...)
			if got := rejectReason(err); tt.want == mtls.ReasonOK && err != nil || tt.want != mtls.ReasonOK && got != tt.want {
				t.Fatalf("%v, want %s", err, tt.want)
			}
		})
	}
	p, err := mtls.ParsePin(rootPin.String())
	if err != nil || p != rootPin {
		t.Errorf("ParsePin(%s) = %v, %v", rootPin, p, err)
	}
	for _, bad := range []string{"", "sha256/", "sha1/AAAA", "sha256/" + strings.Repeat("A", 40), rootPin.String()[7:]} {
		if _, err := mtls.ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted", bad)
		}
	}
}

// craftIntermediate is a new intermediate certificate for the PKI's
// intermediate key, signed by its root: a re-issued intermediate.
func craftIntermediate(t *testing.T, pki *testpki.PKI) *x509.Certificate {
	t.Helper()
	tmpl := *pki.Intermediate
	tmpl.SerialNumber = serialNumber(t)
	tmpl.Subject = pkix.Name{CommonName: "Rotated Intermediate"}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, pki.Root, pki.IntermediateKey.Public(), pki.RootKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// issueUnder signs a clientAuth leaf for id under issuer.
func issueUnder(t *testing.T, issuer *x509.Certificate, key crypto.Signer, id string) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: serialNumber(t), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, newKey(t).Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
