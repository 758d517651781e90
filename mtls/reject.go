package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Reason says why a peer was refused. It is the metric label of
// mica_mtls_handshakes_total (see mtls/mtlsprom), so the set is closed and
// the names are stable.
type Reason string

// The reasons, in the order verification reaches them: the chain first
// (none, unknown CA, validity, usage, the chain's own faults and those of
// its certificates), then the identity it names, then policy (pinned CAs),
// revocation (feed, deny list, CRL), and authorization last.
const (
	ReasonOK Reason = "ok"

	// Chain: the certificates do not make a valid path to a trusted root.
	ReasonNoCertificate      Reason = "no_certificate"      // the peer sent none
	ReasonUnknownCA          Reason = "unknown_ca"          // no path to a root of the trust bundle
	ReasonExpired            Reason = "expired"             // a certificate of the path has expired
	ReasonNotYetValid        Reason = "not_yet_valid"       // a certificate of the path is not valid yet
	ReasonWrongEKU           Reason = "wrong_eku"           // the leaf (or a CA) does not allow the usage required
	ReasonNameConstraints    Reason = "name_constraints"    // a name outside a CA's name constraints
	ReasonBadChain           Reason = "bad_chain"           // another fault of the path: signature, CA bit, path length…
	ReasonInvalidCertificate Reason = "invalid_certificate" // a certificate breaks a rule of RFC 5280 or the CA/B profile (RejectError.Rule says which)
	ReasonWeakKey            Reason = "weak_key"            // an RSA key under 2048 bits or not a multiple of 8

	// Identity: the leaf verified, but names no valid identity.
	ReasonBadIdentity Reason = "bad_identity"

	// Policy.
	ReasonNotPinned    Reason = "ca_not_pinned" // no CA of the path is one of the pinned ones
	ReasonUnauthorized Reason = "unauthorized"  // the Authorizer refused the identity

	// Revocation.
	ReasonRevokedFeed    Reason = "revoked_feed"    // a certificate of the path is revoked (push feed)
	ReasonDenied         Reason = "identity_denied" // a name of the peer is on the deny list
	ReasonRevokedCRL     Reason = "revoked_crl"     // a certificate of the path is revoked (CRL)
	ReasonCRLUnavailable Reason = "crl_unavailable" // hard-fail CRL policy: no valid, fresh CRL for an issuer of the path
)

// reasons lists every Reason.
var reasons = []Reason{ReasonOK, ReasonNoCertificate, ReasonUnknownCA, ReasonExpired, ReasonNotYetValid, ReasonWrongEKU,
	ReasonNameConstraints, ReasonBadChain, ReasonInvalidCertificate, ReasonWeakKey, ReasonBadIdentity, ReasonNotPinned,
	ReasonUnauthorized, ReasonRevokedFeed, ReasonDenied, ReasonRevokedCRL, ReasonCRLUnavailable}

// Class is the kind of failure a Reason is: "chain", "identity",
// "policy" or "revocation"; "" for ReasonOK.
func (r Reason) Class() string {
	switch r {
	case ReasonOK:
		return ""
	case ReasonBadIdentity:
		return "identity"
	case ReasonNotPinned, ReasonUnauthorized:
		return "policy"
	case ReasonRevokedFeed, ReasonDenied, ReasonRevokedCRL, ReasonCRLUnavailable:
		return "revocation"
	}
	return "chain"
}

// RejectError is why a peer was refused. Find it with errors.As on the
// error of the handshake (the side that verified sees it; the other side
// sees a TLS alert) or of Verify.
type RejectError struct {
	Reason Reason
	// Rule names the check that refused a certificate, for
	// ReasonInvalidCertificate and ReasonWeakKey (e.g. "ee-is-ca"; see
	// docs/verifier.md for every rule).
	Rule string
	// Identity is the peer's identity when the certificate named one.
	Identity identity.Identity
	// Certificate is the certificate at fault, when one is.
	Certificate *x509.Certificate
	Err         error
}

func (e *RejectError) Error() string {
	who := "peer"
	if !e.Identity.IsZero() {
		who = "peer " + e.Identity.String()
	}
	reason := string(e.Reason)
	if e.Rule != "" {
		reason += ", " + e.Rule
	}
	return fmt.Sprintf("mtls: %s refused (%s): %v", who, reason, e.Err)
}

func (e *RejectError) Unwrap() error { return e.Err }

func reject(r Reason, id identity.Identity, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Identity: id, Err: fmt.Errorf(format, args...)}
}

// classify turns an error of x509.Certificate.Verify into a refusal.
func classify(err error, now time.Time, id identity.Identity) *RejectError {
	var inv x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var unhandled x509.UnhandledCriticalExtension
	switch {
	case errors.As(err, &unknown):
		return &RejectError{Reason: ReasonUnknownCA, Identity: id,
			Err: fmt.Errorf("no chain to a root of the current trust bundle (%w): is the peer from another trust domain, or is bundle.pem out of date?", err)}
	case errors.As(err, &unhandled):
		return &RejectError{Reason: ReasonInvalidCertificate, Rule: "unknown-critical-extension", Identity: id,
			Err: fmt.Errorf("the leaf has a critical extension this verifier does not know (%w): RFC 5280 4.2 requires refusing it", err)}
	case errors.As(err, &inv):
		rej := &RejectError{Identity: id, Certificate: inv.Cert, Err: err}
		switch inv.Reason {
		case x509.Expired:
			if inv.Cert != nil && now.Before(inv.Cert.NotBefore) {
				rej.Reason = ReasonNotYetValid
				rej.Err = fmt.Errorf("certificate %q is valid only from %s (%w): check the clocks of both machines", inv.Cert.Subject, inv.Cert.NotBefore.Format(time.RFC3339), err)
			} else {
				rej.Reason = ReasonExpired
				rej.Err = fmt.Errorf("certificate expired (%w): the peer's agent has not renewed it", err)
			}
		case x509.IncompatibleUsage, x509.CANotAuthorizedForExtKeyUsage:
			rej.Reason = ReasonWrongEKU
		case x509.CANotAuthorizedForThisName, x509.NameConstraintsWithoutSANs, x509.UnconstrainedName, x509.TooManyConstraints:
			rej.Reason = ReasonNameConstraints
		default:
			rej.Reason = ReasonBadChain
		}
		return rej
	}
	return &RejectError{Reason: ReasonBadChain, Identity: id, Err: err}
}
