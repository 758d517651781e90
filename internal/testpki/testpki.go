// Package testpki makes throwaway CAs and certificates for tests: a root,
// an intermediate name-constrained to one trust domain, and leaves issued
// through the real issuance path, so what tests see is what production
// issues.
//
// Start with [New] and [PKI.Leaf]. Everything is in memory; [PKI.WriteCA]
// and [Leaf.Write] put PEM files in a test's directory for tools that need
// files.
package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/file"
)

// PKI is a root and an intermediate with an Issuer for the intermediate.
type PKI struct {
	TrustDomain     spiffeid.TrustDomain
	Root            *x509.Certificate
	RootKey         crypto.Signer
	Intermediate    *x509.Certificate
	IntermediateKey crypto.Signer
	Issuer          *issuance.Issuer

	now func() time.Time
}

// Option changes how New builds the CA.
type Option func(*options)

type options struct {
	alg        keys.Algorithm
	now        func() time.Time
	dnsDomains []string
}

// WithAlgorithm sets the algorithm of the CA keys (default ECDSA P-256).
func WithAlgorithm(alg keys.Algorithm) Option { return func(o *options) { o.alg = alg } }

// WithClock sets the clock the CA certificates and the Issuer use.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithPermittedDNSDomains name-constrains the intermediate's DNS names too.
func WithPermittedDNSDomains(domains ...string) Option {
	return func(o *options) { o.dnsDomains = domains }
}

// New makes a fresh root and intermediate for trustDomain. It fails the
// test on any error.
func New(t testing.TB, trustDomain string, opts ...Option) *PKI {
	t.Helper()
	o := options{alg: keys.Default, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		t.Fatalf("testpki: trust domain %q: %v", trustDomain, err)
	}
	rootKey := generate(t, o.alg)
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td, Now: o.now})
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	p := &PKI{TrustDomain: td, Root: root, RootKey: rootKey, now: o.now}
	p.newIntermediate(t, o)
	return p
}

// Rotated is a PKI with the same root and a new intermediate, with a key of
// its own: what a rotation of the intermediate makes. Leaves of p and of
// the rotated PKI verify against the same root.
func (p *PKI) Rotated(t testing.TB, opts ...Option) *PKI {
	t.Helper()
	o := options{alg: keys.Default, now: p.now}
	for _, opt := range opts {
		opt(&o)
	}
	r := &PKI{TrustDomain: p.TrustDomain, Root: p.Root, RootKey: p.RootKey, now: o.now}
	r.newIntermediate(t, o)
	return r
}

// newIntermediate makes p's intermediate and Issuer under p's root.
func (p *PKI) newIntermediate(t testing.TB, o options) {
	t.Helper()
	intKey := generate(t, o.alg)
	icfg := ca.IntermediateConfig{TrustDomain: p.TrustDomain, Now: o.now, PermittedDNSDomains: o.dnsDomains}
	csrDER, err := ca.NewIntermediateCSR(intKey, icfg)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	inter, err := ca.SignIntermediate(p.Root, p.RootKey, csr, icfg)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	iss, err := issuance.New(issuance.Config{Cert: inter, Signer: intKey, Now: o.now})
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	p.Intermediate, p.IntermediateKey, p.Issuer = inter, intKey, iss
}

func generate(t testing.TB, alg keys.Algorithm) crypto.Signer {
	t.Helper()
	if alg == keys.RSA3072 {
		if k := storedRSAKey(); k != nil {
			return k
		}
	}
	k, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return k
}

// ID is the SPIFFE identity path in this PKI's trust domain, e.g.
// p.ID(t, "/ns/prod/sa/web").
func (p *PKI) ID(t testing.TB, path string) identity.Identity {
	t.Helper()
	id, err := spiffeid.FromPath(p.TrustDomain, path)
	if err != nil {
		t.Fatalf("testpki: SPIFFE path %q: %v", path, err)
	}
	return identity.Identity{SPIFFE: id}
}

// Roots is a pool holding the root, for tls.Config.RootCAs/ClientCAs.
func (p *PKI) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Root)
	return pool
}

// Intermediates is a pool holding the intermediate.
func (p *PKI) Intermediates() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Intermediate)
	return pool
}

// WriteCA writes root.pem and intermediate.pem into dir and returns their
// paths.
func (p *PKI) WriteCA(t testing.TB, dir string) (rootPath, intermediatePath string) {
	t.Helper()
	rootPath = filepath.Join(dir, ca.RootCertFile)
	intermediatePath = filepath.Join(dir, ca.IntermediateCertFile)
	writePEM(t, rootPath, p.Root.Raw)
	writePEM(t, intermediatePath, p.Intermediate.Raw)
	return rootPath, intermediatePath
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is the intermediate, what a TLS peer sends after its own
	// certificate.
	Chain []*x509.Certificate
}

// LeafOption changes one leaf.
type LeafOption func(*leafOptions)

type leafOptions struct {
	alg       keys.Algorithm
	notBefore time.Time
	notAfter  time.Time
	ttl       time.Duration
	eku       []x509.ExtKeyUsage
	key       crypto.Signer
}

// WithKeyAlgorithm sets the leaf key's algorithm (default ECDSA P-256).
func WithKeyAlgorithm(alg keys.Algorithm) LeafOption { return func(o *leafOptions) { o.alg = alg } }

// WithKey issues for an existing key instead of a new one.
func WithKey(key crypto.Signer) LeafOption { return func(o *leafOptions) { o.key = key } }

// WithTTL sets the lifetime from now (default one hour).
func WithTTL(d time.Duration) LeafOption { return func(o *leafOptions) { o.ttl = d } }

// WithValidity sets NotBefore and NotAfter exactly.
func WithValidity(notBefore, notAfter time.Time) LeafOption {
	return func(o *leafOptions) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// WithExtKeyUsage sets the extended key usages (default serverAuth and
// clientAuth).
func WithExtKeyUsage(eku ...x509.ExtKeyUsage) LeafOption {
	return func(o *leafOptions) { o.eku = eku }
}

// Leaf issues a certificate for id through the PKI's Issuer, failing the
// test on any error. Use p.Issuer.Issue directly to test refusals.
func (p *PKI) Leaf(t testing.TB, id identity.Identity, opts ...LeafOption) *Leaf {
	t.Helper()
	o := leafOptions{alg: keys.Default, ttl: time.Hour, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, opt := range opts {
		opt(&o)
	}
	key := o.key
	if key == nil {
		key = generate(t, o.alg)
	}
	if o.notBefore.IsZero() {
		now := p.now()
		o.notBefore, o.notAfter = now.Add(-time.Minute), now.Add(o.ttl)
	}
	cert, err := p.Issuer.Issue(issuance.Request{
		PublicKey:   key.Public(),
		Identity:    id,
		NotBefore:   o.notBefore,
		NotAfter:    o.notAfter,
		ExtKeyUsage: o.eku,
	})
	if err != nil {
		t.Fatalf("testpki: issuing for %s: %v", id, err)
	}
	return &Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{p.Intermediate}}
}

// TLS is the leaf as a tls.Certificate with its chain.
func (l *Leaf) TLS() tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	for _, ic := range l.Chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// Write puts <name>.pem (the certificate alone) and <name>.key (an
// unencrypted PKCS#8 key, mode 0600) in dir and returns their paths.
func (l *Leaf) Write(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+".key")
	writePEM(t, certPath, l.Cert.Raw)
	if err := file.WritePlain(keyPath, l.Key); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return certPath, keyPath
}

func writePEM(t testing.TB, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatalf("testpki: %v", err)
	}
}
