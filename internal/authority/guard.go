package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/netip"
	"time"

	"github.com/mica-pki/mica/internal/policy"
)

// Guard applies rate limits and watches for anomalies (package limits). The
// authority consults it wherever a key becomes known, so every door obeys
// the same limits. A refusal it returns is an *Error (KindRateLimited, or
// KindForbidden for an anomaly configured to refuse) that the guard has
// already recorded, throttled per key, so the authority does not record it
// again as one leaf per request.
type Guard interface {
	// Admit is asked once the requester is authenticated and before any
	// expensive work (CSR signature, lint, signing): rate limits, renewal
	// storms, issuance bursts.
	Admit(ctx context.Context, at Attempt) error
	// UnexpectedNetwork is told of a request the policy allowed from
	// outside its profile's expected networks.
	UnexpectedNetwork(ctx context.Context, at Attempt) error
	// UnexpectedIssuer is told of a client certificate that no mica
	// intermediate signed. Authentication refuses it regardless; this is
	// the signal. It must not block.
	UnexpectedIssuer(ctx context.Context, source netip.Addr, issuer ForeignIssuer)
}

// Attempt is a request for a certificate as the guard sees it.
type Attempt struct {
	Method   policy.Method
	Profile  string
	Identity string // primary identity
	// Requester is the principal accountable for the request: the token's
	// creator for an enrollment, the renewing identity for a renewal, the
	// account for ACME.
	Requester string
	Source    netip.Addr
	// Lifetime is the lifetime of the certificate being renewed; zero for a
	// first issuance.
	Lifetime time.Duration
	// Actor is who the audit log names for the request (a token's jti, the
	// renewing identity, the ACME account).
	Actor string
}

// ForeignIssuer describes the issuer of a client certificate that no mica
// intermediate signed.
type ForeignIssuer struct {
	Subject string // the leaf's issuer name
	// SHA256 is the hex fingerprint of the issuer certificate when the
	// client sent it in its chain; empty otherwise.
	SHA256 string
	// KeyID is the leaf's authority key identifier, hex; may be empty.
	KeyID string
}

// admit asks the guard, if any. A refusal is returned as is: the guard has
// recorded it.
func (a *Authority) admit(ctx context.Context, at Attempt) *Error {
	if a.guard == nil {
		return nil
	}
	return guardError(a.guard.Admit(ctx, at))
}

// unexpectedNetwork tells the guard, if any, of a decision the policy
// flagged as coming from outside the profile's expected networks.
func (a *Authority) unexpectedNetwork(ctx context.Context, at Attempt, dec policy.Decision) *Error {
	if a.guard == nil || !dec.UnexpectedSource {
		return nil
	}
	at.Profile, at.Identity = dec.Profile, dec.Identity.Primary()
	return guardError(a.guard.UnexpectedNetwork(ctx, at))
}

func guardError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return newError(KindInternal, err, "rate limiting failed: %v", err)
}

// reportForeignIssuer tells the guard about a leaf that no mica
// intermediate signed; called only after chain verification failed, so a
// good chain costs nothing extra.
func (a *Authority) reportForeignIssuer(ctx context.Context, chain []*x509.Certificate, source netip.Addr) {
	leaf := chain[0]
	if a.guard == nil {
		return
	}
	for _, c := range a.issuers.Trust().Intermediates {
		if leaf.CheckSignatureFrom(c) == nil {
			return
		}
	}
	fi := ForeignIssuer{Subject: leaf.Issuer.String(), KeyID: hex.EncodeToString(leaf.AuthorityKeyId)}
	for _, c := range chain[1:] {
		if bytes.Equal(c.RawSubject, leaf.RawIssuer) {
			fi.SHA256 = Fingerprint(c.Raw)
			break
		}
	}
	a.guard.UnexpectedIssuer(ctx, source, fi)
}
