package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Reason says why a handshake was refused. It is the metric label of
// mica_mtls_handshakes_total, so the set is closed.
type Reason string

// The reasons, in the order verification reaches them: the chain first
// (bad, unknown CA, validity, usage), then revocation (feed, then CRL), then
// authorization.
const (
	ReasonOK             Reason = "ok"
	ReasonNoCertificate  Reason = "no_certificate"
	ReasonBadCertificate Reason = "bad_certificate"
	ReasonUnknownCA      Reason = "unknown_ca"
	ReasonExpired        Reason = "expired"
	ReasonNotYetValid    Reason = "not_yet_valid"
	ReasonWrongEKU       Reason = "wrong_eku"
	ReasonUnauthorized   Reason = "unauthorized"
	ReasonRevokedFeed    Reason = "revoked_feed"
	ReasonRevokedCRL     Reason = "revoked_crl"
	ReasonDenied         Reason = "identity_denied"
)

// reasons lists every Reason.
var reasons = []Reason{ReasonOK, ReasonNoCertificate, ReasonBadCertificate, ReasonUnknownCA, ReasonExpired,
	ReasonNotYetValid, ReasonWrongEKU, ReasonUnauthorized, ReasonRevokedFeed, ReasonRevokedCRL, ReasonDenied}

// RejectError is why a peer was refused. Find it with errors.As on the
// error of the handshake (the side that verified sees it; the other side
// sees a TLS alert).
type RejectError struct {
	Reason Reason
	// Identity is the peer's identity when the certificate named one.
	Identity identity.Identity
	Err      error
}

func (e *RejectError) Error() string {
	who := "peer"
	if !e.Identity.IsZero() {
		who = "peer " + e.Identity.String()
	}
	return fmt.Sprintf("mtls: %s refused (%s): %v", who, e.Reason, e.Err)
}

func (e *RejectError) Unwrap() error { return e.Err }

func reject(r Reason, id identity.Identity, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Identity: id, Err: fmt.Errorf(format, args...)}
}

// classify turns an error of x509.Certificate.Verify into a refusal.
func classify(err error, now time.Time, id identity.Identity) *RejectError {
	var inv x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknown):
		return &RejectError{Reason: ReasonUnknownCA, Identity: id,
			Err: fmt.Errorf("no chain to a root of the current trust bundle (%w): is the peer from another trust domain, or is bundle.pem out of date?", err)}
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if inv.Cert != nil && now.Before(inv.Cert.NotBefore) {
			return &RejectError{Reason: ReasonNotYetValid, Identity: id,
				Err: fmt.Errorf("certificate %q is valid only from %s (%w): check the clocks of both machines", inv.Cert.Subject, inv.Cert.NotBefore.Format(time.RFC3339), err)}
		}
		return &RejectError{Reason: ReasonExpired, Identity: id,
			Err: fmt.Errorf("certificate expired (%w): the peer's agent has not renewed it", err)}
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return &RejectError{Reason: ReasonWrongEKU, Identity: id, Err: err}
	}
	return &RejectError{Reason: ReasonBadCertificate, Identity: id, Err: err}
}
