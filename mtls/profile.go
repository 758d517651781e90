package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/mica-pki/mica/identity"
)

// The rules a path must follow beyond what crypto/x509 checks. crypto/x509
// verifies signatures, validity, the CA bit, path lengths, name
// constraints and usages, but accepts certificates that RFC 5280 or the
// CA/Browser Forum's profile forbid; a verifier whose job is to refuse
// what must be refused checks these too. Each rule has a stable name (the
// RejectError's Rule) and is listed, with its source, in docs/verifier.md.
// mica's own CA and leaves follow every one.

// Bounds on what a peer may make the verifier do before any signature is
// checked.
const (
	// maxNameConstraints bounds the subtrees (permitted and excluded) of one
	// CA certificate: checking them costs a comparison per subtree and name.
	maxNameConstraints = 256
	// maxSANs bounds the names of a leaf, for the same reason.
	maxSANs = 1024
	// maxPresented bounds the certificates a peer may send.
	maxPresented = 16
)

// Object identifiers of the extensions the rules look at.
var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidPolicyConstraint = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidInhibitAnyPolicy = asn1.ObjectIdentifier{2, 5, 29, 54}
)

// emptyName is the DER of an empty distinguished name.
var emptyName = []byte{0x30, 0x00}

func invalidCert(rule string, c *x509.Certificate, format string, args ...any) *RejectError {
	reason := ReasonInvalidCertificate
	if rule == "rsa-key-too-small" || rule == "rsa-key-not-multiple-of-8" || rule == "key-algorithm" {
		reason = ReasonWeakKey
	}
	return &RejectError{Reason: reason, Rule: rule, Certificate: c,
		Err: fmt.Errorf("certificate %s: %s", describe(c), fmt.Sprintf(format, args...))}
}

func describe(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return fmt.Sprintf("%q (serial %s)", s, c.SerialNumber.Text(16))
	}
	return "serial " + c.SerialNumber.Text(16)
}

// precheck runs, on the certificates as presented and before any
// signature is checked, the rules whose point is to bound the work a peer
// can cause.
func precheck(certs []*x509.Certificate) *RejectError {
	if len(certs) > maxPresented {
		return invalidCert("too-many-certificates", certs[0], "the peer sent %d certificates; a path needs a handful (at most %d are read)", len(certs), maxPresented)
	}
	leaf := certs[0]
	if n := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.URIs) + len(leaf.EmailAddresses); n > maxSANs {
		return invalidCert("too-many-names", leaf, "it has %d subject alternative names (at most %d are checked against name constraints)", n, maxSANs)
	}
	for _, c := range certs {
		if rej := checkNameConstraintsShape(c); rej != nil {
			return rej
		}
	}
	return nil
}

// checkPath runs the rules on a verified path, leaf first and trust anchor
// last.
func checkPath(path []*x509.Certificate) *RejectError {
	for i, c := range path {
		anchor := i == len(path)-1 && len(path) > 1
		if rej := checkAny(c, anchor); rej != nil {
			return rej
		}
		var issuer *x509.Certificate
		if i+1 < len(path) {
			issuer = path[i+1]
		}
		if rej := checkKeyIDs(c, issuer, anchor); rej != nil {
			return rej
		}
		if i == 0 {
			if rej := checkLeaf(c); rej != nil {
				return rej
			}
			continue
		}
		if rej := checkCA(c, anchor); rej != nil {
			return rej
		}
	}
	return nil
}

// checkAny holds for every certificate of the path. A trust anchor is
// configured, not presented: RFC 5280 6.1.1(d) uses only its name and key,
// so the rules on its serial number are not applied to it (roots with
// serial 0 are still in use).
func checkAny(c *x509.Certificate, anchor bool) *RejectError {
	if c.Version != 3 {
		// RFC 5280 4.1.2.1; CA/B BR 7.1.1.
		return invalidCert("version-not-3", c, "it is an X.509 v%d certificate; only v3 certificates are accepted", c.Version)
	}
	// RFC 5280 4.1.2.2: a positive integer of at most 20 octets.
	if !anchor && (c.SerialNumber == nil || c.SerialNumber.Sign() <= 0) {
		return invalidCert("serial-not-positive", c, "its serial number is not positive (RFC 5280 4.1.2.2)")
	}
	if n := serialOctets(c); !anchor && n > 20 {
		return invalidCert("serial-too-long", c, "its serial number is %d octets, more than the 20 RFC 5280 4.1.2.2 allows", n)
	}
	if bytes.Equal(c.RawIssuer, emptyName) {
		return invalidCert("empty-issuer", c, "its issuer name is empty (RFC 5280 4.1.2.4)")
	}
	if len(c.UnhandledCriticalExtensions) > 0 {
		return invalidCert("unknown-critical-extension", c, "it has critical extension %s, which this verifier does not implement (RFC 5280 4.2)",
			c.UnhandledCriticalExtensions[0])
	}
	if rej := checkKey(c); rej != nil {
		return rej
	}
	// crypto/x509's parser already refuses a critical authority or subject
	// key identifier or authority information access, and empty name
	// constraints.
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidPolicyConstraint) && !e.Critical:
			return invalidCert("policy-constraints-noncritical", c, "its policy constraints are not critical (RFC 5280 4.2.1.11: MUST be critical)")
		case e.Id.Equal(oidInhibitAnyPolicy) && !e.Critical:
			return invalidCert("inhibit-any-policy-noncritical", c, "its inhibitAnyPolicy is not critical (RFC 5280 4.2.1.14: MUST be critical)")
		case e.Id.Equal(oidExtKeyUsage) && len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) == 0:
			return invalidCert("eku-empty", c, "its extended key usage lists no purpose (RFC 5280 4.2.1.12: at least one)")
		}
	}
	emptySubject := bytes.Equal(c.RawSubject, emptyName)
	switch sanCritical := criticalExtension(c, oidSubjectAltName); {
	case emptySubject && !sanCritical:
		return invalidCert("empty-subject-noncritical-san", c, "its subject is empty and its subject alternative names are not critical (RFC 5280 4.2.1.6)")
	case !emptySubject && sanCritical:
		return invalidCert("san-critical-with-subject", c, "its subject alternative names are critical though it has a subject (RFC 5280 4.2.1.6, CA/B BR 7.1.2.7.12)")
	}
	return nil
}

// checkKey: CA/B BR 6.1.5 and 6.1.1.3 — RSA of at least 2048 bits and a
// multiple of 8, ECDSA on P-256, P-384 or P-521, or Ed25519 (which mica
// issues too); nothing else (DSA, other curves).
func checkKey(c *x509.Certificate) *RejectError {
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey:
		switch bits := pub.N.BitLen(); {
		case bits < 2048:
			return invalidCert("rsa-key-too-small", c, "its RSA key has %d bits; at least 2048 are required", bits)
		case bits%8 != 0:
			return invalidCert("rsa-key-not-multiple-of-8", c, "its RSA key has %d bits, not a multiple of 8", bits)
		}
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return invalidCert("key-algorithm", c, "its ECDSA key is on curve %s; P-256, P-384 and P-521 are accepted", pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return invalidCert("key-algorithm", c, "its %s key is not accepted: RSA, ECDSA or Ed25519", c.PublicKeyAlgorithm)
	}
	return nil
}

// checkKeyIDs: the authority key identifier, RFC 5280 4.2.1.1 and CA/B BR
// 7.1.2.11.1.
func checkKeyIDs(c, issuer *x509.Certificate, anchor bool) *RejectError {
	raw, present := extensionValue(c, oidAuthorityKeyID)
	selfIssued := bytes.Equal(c.RawSubject, c.RawIssuer)
	if !present {
		if selfIssued || anchor {
			// A self-signed certificate may omit it, and a trust anchor is
			// used by its key whoever signed it.
			return nil
		}
		return invalidCert("aki-missing", c, "it has no authority key identifier (RFC 5280 4.2.1.1: MUST be present but in self-signed certificates)")
	}
	keyID, issuerOrSerial, ok := parseAKI(raw)
	switch {
	case !ok:
		return invalidCert("aki-malformed", c, "its authority key identifier does not parse")
	case len(keyID) == 0:
		return invalidCert("aki-no-key-id", c, "its authority key identifier has no keyIdentifier (RFC 5280 4.2.1.1)")
	case issuerOrSerial:
		return invalidCert("aki-issuer-serial", c, "its authority key identifier names an issuer and serial (CA/B BR 7.1.2.11.1: MUST NOT)")
	}
	want := issuer
	if want == nil && selfIssued {
		want = c
	}
	if want != nil && len(want.SubjectKeyId) > 0 && !bytes.Equal(keyID, want.SubjectKeyId) {
		return invalidCert("aki-ski-mismatch", c, "its authority key identifier is not its issuer's subject key identifier")
	}
	return nil
}

// checkLeaf holds for the end-entity certificate.
func checkLeaf(c *x509.Certificate) *RejectError {
	switch {
	case c.BasicConstraintsValid && c.IsCA:
		// RFC 5280 4.2.1.9 and CA/B BR 7.1.2.7.8: a peer is an end
		// entity; a CA certificate is not presented as one.
		return invalidCert("ee-is-ca", c, "it is a CA certificate (basicConstraints cA) presented as a peer's own")
	case c.KeyUsage&x509.KeyUsageCertSign != 0:
		return invalidCert("ee-key-cert-sign", c, "its key usage allows signing certificates (RFC 5280 4.2.1.3: only for CAs)")
	case hasExtension(c, oidNameConstraints):
		return invalidCert("ee-name-constraints", c, "it has name constraints (RFC 5280 4.2.1.10: only in CA certificates)")
	case criticalExtension(c, oidExtKeyUsage):
		return invalidCert("ee-critical-eku", c, "its extended key usage is critical (CA/B BR 7.1.2.7.10: MUST be non-critical)")
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny {
			return invalidCert("ee-any-eku", c, "its extended key usage includes anyExtendedKeyUsage (CA/B BR 7.1.2.7.10: MUST NOT)")
		}
	}
	// CA/B BR 7.1.4.3: a subject commonName, if present, is one of the
	// subject alternative names, written the same (an IP address in its
	// canonical form). Verifiers read names from the SAN only; a CN that
	// says something else misleads people and older software.
	if cn := c.Subject.CommonName; cn != "" && !cnInSAN(c, cn) {
		return invalidCert("cn-not-in-san", c, "its subject commonName %q is none of its subject alternative names", cn)
	}
	return nil
}

func cnInSAN(c *x509.Certificate, cn string) bool {
	for _, d := range c.DNSNames {
		if d == cn {
			return true
		}
	}
	for _, ip := range c.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap().String() == cn {
			return true
		}
	}
	for _, u := range c.URIs {
		if u.String() == cn {
			return true
		}
	}
	return false
}

// checkCA holds for the intermediates and the trust anchor of a path.
func checkCA(c *x509.Certificate, anchor bool) *RejectError {
	if !c.BasicConstraintsValid || !c.IsCA {
		return invalidCert("ca-not-ca", c, "it signs certificates but its basic constraints do not say cA (RFC 5280 4.2.1.9)")
	}
	if !criticalExtension(c, oidBasicConstraints) {
		return invalidCert("ca-basic-constraints-noncritical", c, "its basic constraints are not critical (RFC 5280 4.2.1.9: MUST be critical in CA certificates)")
	}
	if hasExtension(c, oidKeyUsage) && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		// RFC 5280 4.2.1.3 and 4.2.1.9: cA without keyCertSign, or a
		// path length without keyCertSign, is inconsistent.
		return invalidCert("ca-without-key-cert-sign", c, "it is a CA whose key usage does not allow keyCertSign (RFC 5280 4.2.1.3, 4.2.1.9)")
	}
	if len(c.SubjectKeyId) == 0 {
		return invalidCert("ski-missing", c, "it is a CA without a subject key identifier (RFC 5280 4.2.1.2: MUST be present)")
	}
	if anchor && (len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0) {
		return invalidCert("anchor-eku", c, "it is a trust anchor with an extended key usage (CA/B BR 7.1.2.1.2: MUST NOT be present)")
	}
	return nil
}

// checkNameConstraintsShape bounds the work of checking name constraints
// (crypto/x509 refuses empty ones at parse time) and refuses dNSName
// constraints that are no host name.
func checkNameConstraintsShape(c *x509.Certificate) *RejectError {
	n := len(c.PermittedDNSDomains) + len(c.ExcludedDNSDomains) + len(c.PermittedIPRanges) + len(c.ExcludedIPRanges) +
		len(c.PermittedEmailAddresses) + len(c.ExcludedEmailAddresses) + len(c.PermittedURIDomains) + len(c.ExcludedURIDomains)
	if n > maxNameConstraints {
		return invalidCert("name-constraints-too-many", c, "it has %d name constraints; at most %d are checked", n, maxNameConstraints)
	}
	// RFC 5280 4.2.1.10: a dNSName constraint is a host name, to which
	// labels may be added on the left; ".example.com" (the URI and e-mail
	// form) and wildcards are not.
	for _, d := range append(slices.Clip(c.PermittedDNSDomains), c.ExcludedDNSDomains...) {
		if d == "" {
			continue
		}
		if _, err := identity.NormalizeDNS(d); err != nil || strings.Contains(d, "*") {
			return invalidCert("name-constraints-invalid-dns", c, "its name constraint dNSName %q is not a host name (RFC 5280 4.2.1.10)", d)
		}
	}
	return nil
}

// parseAKI reads the keyIdentifier of an authority key identifier and
// whether it also names an issuer or serial.
func parseAKI(raw []byte) (keyID []byte, issuerOrSerial, ok bool) {
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(raw, &seq); err != nil || len(rest) > 0 || seq.Tag != asn1.TagSequence {
		return nil, false, false
	}
	for in := seq.Bytes; len(in) > 0; {
		var f asn1.RawValue
		rest, err := asn1.Unmarshal(in, &f)
		if err != nil || f.Class != asn1.ClassContextSpecific {
			return nil, false, false
		}
		switch f.Tag {
		case 0:
			keyID = f.Bytes
		case 1, 2:
			issuerOrSerial = true
		default:
			return nil, false, false
		}
		in = rest
	}
	return keyID, issuerOrSerial, true
}

// serialOctets is the length of the DER content of c's serial number.
func serialOctets(c *x509.Certificate) int {
	b := c.SerialNumber.Bytes()
	if len(b) > 0 && b[0]&0x80 != 0 {
		return len(b) + 1
	}
	return len(b)
}

func extensionValue(c *x509.Certificate, oid asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value, true
		}
	}
	return nil, false
}

func criticalExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	return false
}

// readIdentity reads the leaf's identity, as a refusal when it names none.
func readIdentity(leaf *x509.Certificate) (identity.Identity, *RejectError) {
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return id, &RejectError{Reason: ReasonBadIdentity, Certificate: leaf,
			Err: fmt.Errorf("%w: mica identities are one SPIFFE ID and/or DNS names and IP addresses", err)}
	}
	return id, nil
}
