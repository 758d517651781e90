// Package ca makes and keeps mica's CA hierarchy: a root (path length 2:
// an intermediate, and room for a cross-certificate during a root
// rollover) that signs intermediates (path length 0, name-constrained to one SPIFFE
// trust domain), and the intermediate that signs workload certificates.
//
// Start with [Init] (root and intermediate on one machine) or, for an
// offline root, [InitRootOnly] on the root machine, [RequestIntermediate] on
// the server, [SignIntermediate] back on the root machine and
// [ImportIntermediate] on the server. A server then calls [Load]; it never
// needs the root key. [NewRoot], [NewIntermediateCSR] and [SignIntermediate]
// are the same steps without files.
//
// A CA directory holds:
//
//	root.pem           root certificate (PEM); public, copy it anywhere
//	root.key           root key, encrypted PKCS#8; absent when the root is offline
//	intermediate.pem   intermediate certificate (PEM)
//	intermediate.key   intermediate key, encrypted PKCS#8, mode 0600
//	intermediate.csr   pending intermediate request (PEM), removed on import
//
// Every CA certificate is linted by issuance.CheckAndSign before the real
// key signs it, with the same lints as workload certificates.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
)

const (
	// DefaultRootValidity is ten years: a root is hard to replace, since
	// every verifier holds it.
	DefaultRootValidity = 10 * 365 * 24 * time.Hour
	// DefaultIntermediateValidity is one year: an online key should be
	// rotated often enough that rotation stays a practised routine.
	DefaultIntermediateValidity = 365 * 24 * time.Hour

	organization = "mica"
)

// RootConfig describes a root CA certificate.
type RootConfig struct {
	// TrustDomain names the root ("<trust domain> Root CA"). Required.
	TrustDomain spiffeid.TrustDomain
	// CommonName overrides the default subject common name.
	CommonName string
	// Validity defaults to DefaultRootValidity.
	Validity time.Duration
	// Rand defaults to crypto/rand; Now to time.Now.
	Rand io.Reader
	Now  func() time.Time
}

// IntermediateConfig describes an intermediate CA certificate. The root side
// decides every field; the CSR only proves possession of the key.
type IntermediateConfig struct {
	// TrustDomain is the only SPIFFE trust domain the intermediate may sign
	// for: it becomes the permitted URI domain in its name constraints.
	// Required.
	TrustDomain spiffeid.TrustDomain
	// CommonName overrides the default "<trust domain> Intermediate CA".
	CommonName string
	// Validity defaults to DefaultIntermediateValidity. It must end before
	// the root does; SignIntermediate refuses rather than shortening it.
	Validity time.Duration
	// PermittedDNSDomains and PermittedIPRanges, when set, restrict the DNS
	// names and IP addresses the intermediate may sign. When empty, those
	// name types are unrestricted (RFC 5280 constrains each type
	// separately), and policy alone decides them.
	PermittedDNSDomains []string
	PermittedIPRanges   []netip.Prefix
	// Rand defaults to crypto/rand; Now to time.Now.
	Rand io.Reader
	Now  func() time.Time
}

// backdate sets a CA certificate's NotBefore early, so that verifiers
// whose clocks run behind, and leaves backdated for the same reason, are
// still inside the CA's validity: an hour, or a tenth of a short life (a
// rotation drill's CAs live minutes).
func backdate(validity time.Duration) time.Duration { return min(time.Hour, validity/10) }

func orDefaults(r io.Reader, now func() time.Time) (io.Reader, func() time.Time) {
	if r == nil {
		r = rand.Reader
	}
	if now == nil {
		now = time.Now
	}
	return r, now
}

func serial(r io.Reader) (*big.Int, error) {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("ca: reading randomness for the serial number: %w", err)
	}
	s := new(big.Int).SetBytes(b[:])
	if s.Sign() == 0 {
		return nil, errors.New("ca: the random source returned zeros for a serial number")
	}
	return s, nil
}

func checkSigner(signer crypto.Signer) error {
	if signer == nil {
		return errors.New("ca: no signer given")
	}
	if _, err := keys.AlgorithmOf(signer.Public()); err != nil {
		return fmt.Errorf("ca: CA key: %w", err)
	}
	return nil
}

// rootPathLen leaves room below a root for its intermediates (path length
// 0) and, during a root rollover, for a cross-certificate above them: the
// path from a new intermediate to the old root is intermediate →
// cross-certificate (the new root certified by the old) → old root, and
// Go and OpenSSL both hold the trusted root to its path length. A root
// with path length 1 (made before rollovers) can only be rolled over for
// verifiers that take the new bundle.
const rootPathLen = 2

// NewRoot makes a self-signed root CA certificate for signer: path length
// 2 (see rootPathLen), key usage certSign and cRLSign, subject "<trust
// domain> Root CA", O=mica.
func NewRoot(signer crypto.Signer, cfg RootConfig) (*x509.Certificate, error) {
	if err := checkSigner(signer); err != nil {
		return nil, err
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: RootConfig.TrustDomain is required")
	}
	r, now := orDefaults(cfg.Rand, cfg.Now)
	validity := cfg.Validity
	if validity == 0 {
		validity = DefaultRootValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("ca: root validity %s is negative", validity)
	}
	cn := cfg.CommonName
	if cn == "" {
		cn = cfg.TrustDomain.Name() + " Root CA"
	}
	sn, err := serial(r)
	if err != nil {
		return nil, err
	}
	// RFC 5280 lets a self-signed certificate omit the authority key
	// identifier, but zlint (and some path builders) want it; for a root it
	// equals the subject key identifier.
	ski, err := keys.SubjectKeyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	t := now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ski,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{organization}},
		NotBefore:             t.Add(-backdate(validity)),
		NotAfter:              t.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            rootPathLen,
	}
	cert, err := issuance.CheckAndSign(tmpl, nil, signer.Public(), signer, r)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	return cert, nil
}

// NewIntermediateCSR makes the certificate request an intermediate sends to
// the root: it proves possession of signer's key and suggests a subject.
func NewIntermediateCSR(signer crypto.Signer, cfg IntermediateConfig) ([]byte, error) {
	if err := checkSigner(signer); err != nil {
		return nil, err
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: IntermediateConfig.TrustDomain is required")
	}
	r, _ := orDefaults(cfg.Rand, cfg.Now)
	der, err := x509.CreateCertificateRequest(r, &x509.CertificateRequest{Subject: intermediateSubject(cfg)}, signer)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate certificate request: %w", err)
	}
	return der, nil
}

func intermediateSubject(cfg IntermediateConfig) pkix.Name {
	cn := cfg.CommonName
	if cn == "" {
		cn = cfg.TrustDomain.Name() + " Intermediate CA"
	}
	return pkix.Name{CommonName: cn, Organization: []string{organization}}
}

// SignIntermediate signs an intermediate CA certificate for csr's key:
// path length 0, and name constraints (critical, as RFC 5280 requires)
// permitting SPIFFE IDs of cfg.TrustDomain only, plus the configured DNS
// domains and IP ranges.
func SignIntermediate(root *x509.Certificate, rootKey crypto.Signer, csr *x509.CertificateRequest, cfg IntermediateConfig) (*x509.Certificate, error) {
	if root == nil || csr == nil {
		return nil, errors.New("ca: SignIntermediate needs the root certificate and the request")
	}
	if err := checkSigner(rootKey); err != nil {
		return nil, err
	}
	if pub, ok := rootKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(root.PublicKey) {
		return nil, fmt.Errorf("ca: the root key does not belong to root certificate %q: use the root.key next to that root.pem", root.Subject.CommonName)
	}
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("ca: %q is not a CA certificate", root.Subject.CommonName)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: the intermediate request's signature does not verify, so it does not prove possession of its key: %w", err)
	}
	if _, err := keys.AlgorithmOf(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: intermediate request key: %w", err)
	}
	if pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(root.PublicKey) {
		return nil, errors.New("ca: the intermediate request uses the root's own key: generate a separate intermediate key")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: IntermediateConfig.TrustDomain is required: it limits which SPIFFE IDs the intermediate can sign")
	}
	dnsDomains, err := normalizeDomains(cfg.PermittedDNSDomains)
	if err != nil {
		return nil, err
	}
	r, now := orDefaults(cfg.Rand, cfg.Now)
	validity := cfg.Validity
	if validity == 0 {
		validity = DefaultIntermediateValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("ca: intermediate validity %s is negative", validity)
	}
	t := now().Truncate(time.Second)
	notBefore := t.Add(-backdate(validity))
	if notBefore.Before(root.NotBefore) {
		notBefore = root.NotBefore
	}
	notAfter := t.Add(validity)
	if notAfter.After(root.NotAfter) {
		return nil, fmt.Errorf("ca: an intermediate valid until %s would outlive the root, which expires %s: ask for a shorter validity or rotate the root first",
			notAfter.Format(time.RFC3339), root.NotAfter.Format(time.RFC3339))
	}
	if t.Before(root.NotBefore) || t.After(root.NotAfter) {
		return nil, fmt.Errorf("ca: root %q is not valid now (valid %s to %s)", root.Subject.CommonName, root.NotBefore.Format(time.RFC3339), root.NotAfter.Format(time.RFC3339))
	}
	sn, err := serial(r)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      intermediateSubject(cfg),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		// digitalSignature lets the intermediate sign OCSP responses itself,
		// without a delegated responder certificate.
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		PermittedURIDomains:         []string{cfg.TrustDomain.Name()},
		PermittedDNSDomains:         dnsDomains,
		PermittedIPRanges:           ipNets(cfg.PermittedIPRanges),
		PermittedDNSDomainsCritical: true,
	}
	cert, err := issuance.CheckAndSign(tmpl, root, csr.PublicKey, rootKey, r)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate certificate: %w", err)
	}
	return cert, nil
}

func normalizeDomains(in []string) ([]string, error) {
	var out []string
	for _, d := range in {
		// RFC 5280 §4.2.1.10: a dNSName constraint is a domain name, which
		// covers itself and every name below it; a leading dot is the URI
		// form, and verifiers (mica's own among them) refuse it in a
		// dNSName constraint.
		if strings.HasPrefix(d, ".") {
			return nil, fmt.Errorf("ca: permitted DNS domain %q starts with a dot: write it as %q, which covers it and every name below it", d, strings.TrimPrefix(d, "."))
		}
		n, err := identity.NormalizeDNS(d)
		if err != nil || strings.Contains(n, "*") {
			return nil, fmt.Errorf("ca: permitted DNS domain %q is not a domain name", d)
		}
		out = append(out, n)
	}
	return out, nil
}

func ipNets(in []netip.Prefix) []*net.IPNet {
	var out []*net.IPNet
	for _, p := range in {
		p = p.Masked()
		out = append(out, &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

// CrossSign certifies root's key and name with another root's key, for a
// root rollover: verifiers that trust only issuer then accept chains that
// end in root, and the other way round with the two swapped. The
// cross-certificate keeps root's subject, subject key identifier and path
// length; its validity is the overlap of the two roots'.
func CrossSign(root, issuer *x509.Certificate, issuerKey crypto.Signer, r io.Reader, now func() time.Time) (*x509.Certificate, error) {
	if root == nil || issuer == nil {
		return nil, errors.New("ca: CrossSign needs both roots")
	}
	if err := checkSigner(issuerKey); err != nil {
		return nil, err
	}
	if pub, ok := issuerKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(issuer.PublicKey) {
		return nil, fmt.Errorf("ca: the signing key does not belong to root %q", issuer.Subject.CommonName)
	}
	if !root.IsCA || !issuer.IsCA {
		return nil, errors.New("ca: only roots are cross-signed")
	}
	r, now = orDefaults(r, now)
	sn, err := serial(r)
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := root.NotBefore, root.NotAfter
	if issuer.NotBefore.After(notBefore) {
		notBefore = issuer.NotBefore
	}
	if issuer.NotAfter.Before(notAfter) {
		notAfter = issuer.NotAfter
	}
	if !notAfter.After(now()) {
		return nil, fmt.Errorf("ca: roots %q and %q do not overlap in the future", root.Subject.CommonName, issuer.Subject.CommonName)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               root.Subject,
		RawSubject:            root.RawSubject,
		SubjectKeyId:          root.SubjectKeyId,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Below a cross-certificate come only intermediates.
		MaxPathLen: 1,
	}
	cert, err := issuance.CheckAndSign(tmpl, issuer, root.PublicKey, issuerKey, r)
	if err != nil {
		return nil, fmt.Errorf("ca: cross-certificate: %w", err)
	}
	return cert, nil
}
