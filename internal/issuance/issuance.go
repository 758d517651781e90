// Package issuance turns a decided [Request] into a signed end-entity
// certificate: validate, build the template, lint a to-be-signed copy, and
// only then sign with the CA's [crypto.Signer]. Policy decides what a
// certificate may say; this package makes sure what it says is well formed
// and within what the issuing CA can vouch for, and refuses rather than
// adjusts.
//
// Start with [New] and [Issuer.Issue]. The lint selection and its costs are
// documented in lint.go, and in shape.go why a leaf whose shape was linted
// before needs no zlint run of its own; [CheckAndSign] gives CA
// certificates the same lints, always in full.
package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/keys"
)

// Config says which CA issues and how. Zero values of the optional fields
// are safe.
type Config struct {
	// Cert is the issuing CA certificate (the intermediate) and Signer its
	// key, from a file, an HSM or anything else that signs.
	Cert   *x509.Certificate
	Signer crypto.Signer

	// CRLURL, when set, goes into every certificate's CRL distribution
	// points; OCSPURL into its authority information access. Both must be
	// absolute http or https URLs.
	CRLURL  string
	OCSPURL string

	// Rand supplies serial numbers and signature randomness; nil means
	// crypto/rand.
	Rand io.Reader
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Issuer signs end-entity certificates for one CA. It is safe for concurrent
// use.
type Issuer struct {
	cert    *x509.Certificate
	signer  crypto.Signer
	crl     []string
	ocsp    []string
	rand    io.Reader
	now     func() time.Time
	linter  *linter
	permURI []string

	// hook, when set by this package's tests, edits each template just
	// before it is linted, to provoke lint failures on purpose.
	hook func(*x509.Certificate)
}

var (
	// ErrInvalidRequest is wrapped by every refusal caused by the request
	// itself (as opposed to lint failures or a broken CA).
	ErrInvalidRequest = errors.New("issuance: invalid request")
	// ErrIssuerNotValid is returned when the issuing CA certificate is not
	// valid at the current time.
	ErrIssuerNotValid = errors.New("issuance: issuing CA certificate is not valid now")
)

// New checks the configuration and prepares an Issuer: the lint registry is
// built and a throwaway lint key of the issuer's algorithm is generated
// here, once, so that Issue pays neither.
func New(cfg Config) (*Issuer, error) {
	if cfg.Cert == nil || cfg.Signer == nil {
		return nil, errors.New("issuance: Config needs both the issuing CA certificate and its signer")
	}
	if !cfg.Cert.IsCA || !cfg.Cert.BasicConstraintsValid || cfg.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("issuance: certificate %q is not a CA certificate allowed to sign certificates", cfg.Cert.Subject)
	}
	pub, ok := cfg.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cfg.Cert.PublicKey) {
		return nil, fmt.Errorf("issuance: the signer's key does not belong to CA certificate %q: load the key that matches it", cfg.Cert.Subject)
	}
	if _, err := keys.AlgorithmOf(cfg.Cert.PublicKey); err != nil {
		return nil, fmt.Errorf("issuance: CA certificate %q: %w", cfg.Cert.Subject, err)
	}
	iss := &Issuer{
		cert:   cfg.Cert,
		signer: cfg.Signer,
		rand:   cfg.Rand,
		now:    cfg.Now,
	}
	if iss.rand == nil {
		iss.rand = rand.Reader
	}
	if iss.now == nil {
		iss.now = time.Now
	}
	for _, u := range []struct {
		name, value string
		dst         *[]string
	}{{"CRL", cfg.CRLURL, &iss.crl}, {"OCSP", cfg.OCSPURL, &iss.ocsp}} {
		if u.value == "" {
			continue
		}
		if err := checkURL(u.value); err != nil {
			return nil, fmt.Errorf("issuance: %s URL %q: %w", u.name, u.value, err)
		}
		*u.dst = []string{u.value}
	}
	if len(cfg.Cert.SubjectKeyId) == 0 {
		return nil, fmt.Errorf("issuance: CA certificate %q has no subject key identifier, so leaves could not name it: re-issue the CA certificate", cfg.Cert.Subject)
	}
	iss.permURI = cfg.Cert.PermittedURIDomains
	l, err := newLinter(cfg.Cert, cfg.Cert.PublicKey, iss.rand)
	if err != nil {
		return nil, err
	}
	l.shapes = newShapes(l.lints)
	iss.linter = l
	return iss, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an absolute http:// or https:// URL")
	}
	return nil
}

// Cert is the issuing CA certificate.
func (iss *Issuer) Cert() *x509.Certificate { return iss.cert }

// Chain is what a client needs besides its own certificate to build a path
// to the root: the issuing CA certificate, DER-encoded.
func (iss *Issuer) Chain() [][]byte { return [][]byte{iss.cert.Raw} }

// Issue validates req, lints a to-be-signed copy of the certificate and, if
// every lint passes, signs it. Refusals wrap [ErrInvalidRequest] or
// [ErrIssuerNotValid], or are a [*LintError]; nothing is signed in any of
// those cases.
func (iss *Issuer) Issue(req Request) (*x509.Certificate, error) {
	p, err := iss.Prepare(req)
	if err != nil {
		return nil, err
	}
	return iss.Sign(p)
}

// Prepared is a certificate that passed validation and lint and only waits
// for the CA's signature: the check half of check-then-sign, split out so
// that callers can time and trace the two halves apart.
type Prepared struct{ tbs tbs }

// Prepare validates req, builds the certificate and lints a to-be-signed
// copy of it. Its refusals are those of Issue; nothing is signed.
func (iss *Issuer) Prepare(req Request) (*Prepared, error) {
	tmpl, err := iss.template(req)
	if err != nil {
		return nil, err
	}
	if iss.hook != nil {
		iss.hook(tmpl)
	}
	t, err := iss.linter.check(tmpl, req.PublicKey, iss.rand)
	if err != nil {
		return nil, err
	}
	return &Prepared{tbs: t}, nil
}

// Sign signs a prepared certificate with the CA's key, exactly as linted.
func (iss *Issuer) Sign(p *Prepared) (*x509.Certificate, error) {
	if p == nil {
		return nil, errors.New("issuance: Sign needs a certificate from Prepare")
	}
	return sign(p.tbs, iss.signer, iss.rand)
}

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// maxRSABits bounds the RSA keys mica certifies: larger moduli only cost
// every verifier time and no profile needs them.
const maxRSABits = 8192

// checkSubjectKey accepts every key type a profile may allow (policy's
// key_types): ECDSA P-256, P-384 and P-521, Ed25519, and RSA of 2048 to 8192
// bits in whole octets. Which of them a request may use is policy's
// decision; this only refuses what mica cannot certify soundly. It reports
// whether the key is RSA (which takes keyEncipherment).
func checkSubjectKey(pub crypto.PublicKey) (isRSA bool, err error) {
	switch k := pub.(type) {
	case nil:
		return false, errors.New("no public key")
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return false, nil
		}
		return false, fmt.Errorf("ECDSA curve %s is not certified: use P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return false, nil
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < policyMinRSABits || bits > maxRSABits || bits%8 != 0 {
			return true, fmt.Errorf("%d-bit RSA is not certified: use 2048 to %d bits in whole octets, or an ECDSA key", bits, maxRSABits)
		}
		return true, nil
	}
	return false, fmt.Errorf("public key type %T is not certified: use ECDSA, Ed25519 or RSA", pub)
}

// policyMinRSABits is the RSA floor every profile keeps (policy.MinRSABits).
const policyMinRSABits = 2048

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidRequest}, args...)...)
}

// template validates req and builds the certificate template.
func (iss *Issuer) template(req Request) (*x509.Certificate, error) {
	isRSA, err := checkSubjectKey(req.PublicKey)
	if err != nil {
		return nil, invalid("public key: %v", err)
	}
	if pub, ok := req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(iss.cert.PublicKey) {
		return nil, invalid("the public key is the issuing CA's own key: generate a new key for the workload")
	}
	if req.Identity.IsZero() {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, identity.ErrNoIdentity)
	}
	if len(req.ExtKeyUsage) == 0 {
		return nil, invalid("no extended key usage: policy must choose serverAuth and/or clientAuth")
	}
	for _, eku := range req.ExtKeyUsage {
		if eku == x509.ExtKeyUsageAny {
			return nil, invalid("extended key usage \"any\" is not issued: name the usages")
		}
	}

	// X.509 times have one-second resolution; compare what will be encoded.
	nb, na := req.NotBefore.Truncate(time.Second), req.NotAfter.Truncate(time.Second)
	now := iss.now()
	switch {
	case req.NotBefore.IsZero() || req.NotAfter.IsZero():
		return nil, invalid("NotBefore and NotAfter must both be set")
	case !na.After(nb):
		return nil, invalid("NotAfter %s is not after NotBefore %s", na.Format(time.RFC3339), nb.Format(time.RFC3339))
	case now.Before(iss.cert.NotBefore) || now.After(iss.cert.NotAfter):
		return nil, fmt.Errorf("%w: CA %q is valid from %s to %s, and now is %s: rotate the intermediate", ErrIssuerNotValid,
			iss.cert.Subject.CommonName, iss.cert.NotBefore.Format(time.RFC3339), iss.cert.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	case !na.After(now):
		return nil, invalid("NotAfter %s is already in the past", na.Format(time.RFC3339))
	case nb.Before(iss.cert.NotBefore):
		return nil, invalid("NotBefore %s is before the issuing CA's NotBefore %s", nb.Format(time.RFC3339), iss.cert.NotBefore.Format(time.RFC3339))
	case na.After(iss.cert.NotAfter):
		return nil, invalid("NotAfter %s is after the issuing CA's NotAfter %s: ask for a shorter lifetime or rotate the intermediate", na.Format(time.RFC3339), iss.cert.NotAfter.Format(time.RFC3339))
	}
	if err := iss.checkConstraints(req.Identity); err != nil {
		return nil, err
	}

	serial, err := iss.serial()
	if err != nil {
		return nil, err
	}
	ski, err := keys.SubjectKeyID(req.PublicKey)
	if err != nil {
		return nil, invalid("public key: %v", err)
	}
	ku := x509.KeyUsageDigitalSignature
	if isRSA {
		// RSA key exchange in TLS 1.2 needs it; ECDSA and Ed25519 keys must
		// not have it (RFC 8813).
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject stays empty: the identity lives in the SAN only, as the
		// X509-SVID specification and RFC 6125 prefer, so the two can never
		// disagree. crypto/x509 marks the SAN critical when the subject is
		// empty, as RFC 5280 requires.
		Subject:               pkix.Name{},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              ku,
		ExtKeyUsage:           append([]x509.ExtKeyUsage(nil), req.ExtKeyUsage...),
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
		DNSNames:              append([]string(nil), req.Identity.DNS...),
		CRLDistributionPoints: iss.crl,
		OCSPServer:            iss.ocsp,
	}
	if len(req.ExtKeyUsage) == 1 && req.ExtKeyUsage[0] == x509.ExtKeyUsageOCSPSigning {
		// A delegated OCSP responder's certificate (RFC 6960 4.2.2.2):
		// relying parties need not check its own status (id-pkix-ocsp-
		// nocheck, 4.2.2.2.1), its short life being the protection, so it
		// points at no CRL and no responder.
		tmpl.CRLDistributionPoints, tmpl.OCSPServer = nil, nil
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}}
	}
	if !req.Identity.SPIFFE.IsZero() {
		tmpl.URIs = []*url.URL{req.Identity.SPIFFE.URL()}
	}
	for _, ip := range req.Identity.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	return tmpl, nil
}

// serial is 128 bits: the issuance time in microseconds (64 bits), then 64
// bits from the random source. The random half alone carries the 64 bits of
// CSPRNG entropy that RFC 5280 practice and the CA/Browser Forum ask for;
// the time half makes serials grow with time, so the inventory's serial
// index is appended to rather than written at random pages, and a serial
// says roughly when it was issued.
func (iss *Issuer) serial() (*big.Int, error) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(iss.now().UnixMicro()))
	if _, err := io.ReadFull(iss.rand, b[8:]); err != nil {
		return nil, fmt.Errorf("issuance: reading randomness for the serial number: %w", err)
	}
	if binary.BigEndian.Uint64(b[8:]) == 0 {
		return nil, errors.New("issuance: the random source returned zeros for a serial number: check Config.Rand")
	}
	return new(big.Int).SetBytes(b[:]), nil
}

// checkConstraints refuses identities outside the issuing CA's name
// constraints: such a certificate would be signed but fail every path
// validation, so it is a policy mistake better caught here with a clear
// message.
func (iss *Issuer) checkConstraints(id identity.Identity) error {
	c := iss.cert
	if !id.SPIFFE.IsZero() && len(c.PermittedURIDomains) > 0 {
		if !anyDomainMatch(c.PermittedURIDomains, id.SPIFFE.TrustDomain().Name(), false) {
			return invalid("SPIFFE ID %s is outside the issuing CA's trust domain (permitted: %s)", id.SPIFFE, strings.Join(c.PermittedURIDomains, ", "))
		}
	}
	if len(c.PermittedDNSDomains) > 0 {
		for _, d := range id.DNS {
			if !anyDomainMatch(c.PermittedDNSDomains, strings.TrimPrefix(d, "*."), true) {
				return invalid("DNS name %s is outside the issuing CA's permitted DNS domains (%s)", d, strings.Join(c.PermittedDNSDomains, ", "))
			}
		}
	}
	if len(c.PermittedIPRanges) > 0 {
		for _, ip := range id.IPs {
			ok := false
			for _, r := range c.PermittedIPRanges {
				if r.Contains(net.IP(ip.AsSlice())) {
					ok = true
					break
				}
			}
			if !ok {
				return invalid("IP address %s is outside the issuing CA's permitted IP ranges", ip)
			}
		}
	}
	return nil
}

// anyDomainMatch applies RFC 5280 name-constraint matching. For DNS names a
// constraint "example.com" covers the name and all its subdomains; for URI
// hosts it covers only that host, and ".example.com" covers subdomains.
func anyDomainMatch(constraints []string, host string, dns bool) bool {
	host = strings.ToLower(host)
	for _, c := range constraints {
		c = strings.ToLower(c)
		switch {
		case strings.HasPrefix(c, "."):
			if strings.HasSuffix(host, c) {
				return true
			}
		case host == c:
			return true
		case dns && strings.HasSuffix(host, "."+c):
			return true
		}
	}
	return false
}
