package authority

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/token"
)

// maxBackdate is how far NotBefore is set in the past, so that a relying
// party whose clock runs a little behind still accepts a fresh certificate.
// The lifetime (NotAfter − NotBefore) stays exactly the decided TTL, so the
// backdate is at most a tenth of it: a very short-lived certificate must not
// be born nearly expired.
const maxBackdate = time.Minute

func backdate(ttl time.Duration) time.Duration { return min(maxBackdate, ttl/10) }

// Issued is a certificate that has been durably recorded.
type Issued struct {
	Certificate *x509.Certificate
	Chain       []*x509.Certificate // intermediates, leaf's issuer first
	Roots       []*x509.Certificate
	Record      store.Certificate
	// LeafIndex is the issuance event's position in the audit log.
	LeafIndex int64
}

// EnrollRequest is a first enrollment paid for with a one-time token.
type EnrollRequest struct {
	Token  string
	CSR    []byte // DER
	TTL    time.Duration
	Source netip.Addr
}

// Enroll issues a certificate for the identity a token is bound to.
func (a *Authority) Enroll(ctx context.Context, req EnrollRequest) (iss *Issued, err error) {
	ctx, tr := a.track(ctx, "authority.Enroll", policy.MethodToken)
	defer func() { tr.end(iss, err) }()
	now := a.now()
	claims, err := step(ctx, a, spanAuthenticate, func(context.Context) (token.Claims, error) {
		return a.tokens.Verify(req.Token, now)
	})
	if err != nil {
		// Not recorded one by one: the caller is not authenticated, and
		// a leaf per failure would let anyone grow the log. The AuthFailed
		// hook aggregates them instead.
		kind := KindTokenInvalid
		if errors.Is(err, token.ErrExpired) || errors.Is(err, token.ErrNotYet) {
			kind = KindTokenExpired
		}
		a.failedAuth(req.Source, kind.String())
		return nil, newError(kind, err, "%v", err)
	}
	tr.profile = claims.Profile
	actor := "token:" + claims.ID
	want, err := identity.Parse(claims.Identity)
	// The token's creator is accountable for what it enrolls, so the
	// requester limits apply to the creator, however many tokens it made.
	d := &doorRequest{method: policy.MethodToken, action: ActEnroll, principal: Principal{Name: actor, Token: claims.ID},
		profile: claims.Profile, name: claims.Identity, identity: want, actor: actor, requester: claims.Issuer,
		source: req.Source, network: claims.Network, credential: "token", ttl: req.TTL,
		csr: req.CSR, boundBy: "the token is bound to",
		recordAction: store.ActionCertIssued, owner: claims.Issuer,
		detail: "enrolled with token " + claims.ID + " created by " + claims.Issuer,
		token:  &store.TokenUse{JTI: claims.ID, ExpiresAt: claims.Expiry}}
	if err != nil {
		d.identityErr = newError(KindTokenInvalid, err, "token names an unusable identity: %v", err)
	}
	in, err := a.prelude(ctx, d)
	if err != nil {
		return nil, err
	}
	iss, err = a.issue(ctx, in)
	if KindOf(err) == KindTokenReplayed {
		if again, ok := a.alreadyPaid(ctx, claims.ID, in.req.PublicKey); ok {
			return again, nil
		}
	}
	return iss, err
}

// alreadyPaid answers a retried enrollment: when the certificate a token
// paid for was committed but the response never reached the client, the
// same token with the same public key gets that same certificate again
// (while it is active), instead of a refusal that would strand the
// machine. A different key is a replay and stays refused.
func (a *Authority) alreadyPaid(ctx context.Context, jti string, key crypto.PublicKey) (*Issued, bool) {
	rec, err := a.store.CertificateByToken(ctx, jti)
	if err != nil || rec.Status != store.StatusActive || !a.now().Before(rec.NotAfter) {
		return nil, false
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return nil, false
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key) {
		return nil, false
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "certificate returned again for its token",
		slog.String("serial", rec.Serial), slog.String("identity", rec.Identity), slog.String("token", jti))
	trust := a.issuers.Trust()
	return &Issued{Certificate: cert, Chain: trust.Chain(rec.Issuer), Roots: trust.Roots, Record: rec}, true
}

// RenewRequest is a renewal authenticated by the current certificate.
type RenewRequest struct {
	Peer Principal
	CSR  []byte // DER; nil when KeepKey
	// KeepKey certifies the current certificate's key again, without a
	// CSR: the TLS handshake that authenticated Peer proved possession of
	// it, as a CSR's signature would.
	KeepKey bool
	TTL     time.Duration
	Source  netip.Addr
}

// Renew issues a new certificate with exactly the identity and profile of the
// one that authenticated the request. The peer must come from Authenticate,
// which already refused expired, revoked and foreign certificates.
func (a *Authority) Renew(ctx context.Context, req RenewRequest) (iss *Issued, err error) {
	ctx, tr := a.track(ctx, "authority.Renew", policy.MethodRenew)
	defer func() { tr.end(iss, err) }()
	rec := req.Peer.Record
	tr.profile = rec.Profile
	chainStart := chainStartOf(rec)
	d := &doorRequest{method: policy.MethodRenew, action: ActRenew, principal: req.Peer,
		profile: rec.Profile, name: rec.Identity, actor: req.Peer.Name, requester: req.Peer.Name,
		source: req.Source, serial: rec.Serial, lifetime: rec.NotAfter.Sub(rec.NotBefore), ttl: req.TTL,
		csr: req.CSR, keepKey: req.KeepKey, boundBy: "renewal keeps the identity of the current certificate,",
		recordAction: store.ActionCertRenewed, renewedFrom: rec.Serial, chainStart: chainStart,
		owner: inheritedOwner(rec), detail: "renewed from " + rec.Serial}
	if cert := req.Peer.Certificate; cert == nil {
		d.identityErr = newError(KindInvalid, nil, "a renewal is authenticated by the current certificate: present it")
	} else if d.identity, err = identity.FromCertificate(cert); err != nil {
		d.identityErr = newError(KindInvalid, err, "current certificate carries no usable identity: %v", err)
	} else if req.Peer.Approval == "" && SerialHex(cert) == rec.Serial {
		// The handshake with this very certificate proved its key is held.
		d.heldKey = cert.PublicKey
	}
	in, err := a.prelude(ctx, d)
	if err != nil {
		return nil, err
	}
	return a.issue(ctx, in)
}

// chainStartOf is when a certificate's renewal chain began; certificates
// recorded before chains were start theirs at their own NotBefore.
func chainStartOf(rec store.Certificate) time.Time {
	if rec.ChainStartedAt.IsZero() || rec.ChainStartedAt.Unix() <= 0 {
		return rec.NotBefore
	}
	return rec.ChainStartedAt
}

// inheritedOwner is the owner a renewal keeps: the renewed certificate's,
// or its requester for certificates recorded before owners were.
func inheritedOwner(rec store.Certificate) string {
	if rec.Owner != "" {
		return rec.Owner
	}
	return rec.Requester
}

type issueInput struct {
	req         policy.Request
	event       store.Event
	action      store.Action
	detail      string
	renewedFrom string
	token       *store.TokenUse
	// owner answers for the certificate (store.Certificate.Owner).
	owner string
	// chainStart is when the renewal chain began; zero starts one now.
	chainStart time.Time
	// attempt is the request as the guard saw it at admission; zero for
	// mica's own issuance, which no limit applies to.
	attempt Attempt
	// issuer, when set, is the ID of the CA that must sign (an OCSP
	// responder's certificate comes from the CA it answers for).
	issuer string
}

// issue is the shared tail of every issuance: decide → lint and sign → record.
func (a *Authority) issue(ctx context.Context, in issueInput) (*Issued, error) {
	// The deny list is not read here: the commit checks it (Issuance.Names),
	// on the path every door shares, in the transaction that would record
	// the certificate, so a denied identity gets nothing from any door —
	// not even when the denial commits while its certificate is signed.
	dec, err := step(ctx, a, spanDecide, func(ctx context.Context) (policy.Decision, error) { return a.decide(in.req) })
	if err != nil {
		return nil, a.refused(ctx, in.event, err.(*Error))
	}
	if in.attempt.Method != "" {
		if err := a.unexpectedNetwork(ctx, in.attempt, dec); err != nil {
			return nil, err
		}
	}
	notBefore := a.now().Add(-backdate(dec.TTL))
	notAfter := notBefore.Add(dec.TTL)
	signing := a.issuers.Signing(notAfter)
	if in.issuer != "" {
		if signing = a.issuers.Issuer(in.issuer); signing == nil {
			return nil, newError(KindInternal, nil, "issuing CA %s is not in the bundle or its key is not online here", in.issuer)
		}
	}
	if notBefore.Before(signing.Cert.NotBefore) {
		// Backdating stops at the issuer's start: a CA activated minutes
		// ago (short-lived CAs, a rotation drill) backdates less.
		notBefore = signing.Cert.NotBefore
	}
	if notAfter.After(signing.Cert.NotAfter) {
		// A leaf cannot outlive its issuer. Rotation has the next issuer
		// sign before this happens; when none is ready yet, shorten the
		// leaf rather than refuse, so that clients keep working.
		notAfter = signing.Cert.NotAfter
	}
	prepared, err := step(ctx, a, spanLint, func(context.Context) (*issuance.Prepared, error) {
		return signing.Issuer.Prepare(issuance.Request{
			PublicKey: in.req.PublicKey, Identity: dec.Identity,
			NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: dec.ExtKeyUsage,
		})
	})
	var cert *x509.Certificate
	if err == nil {
		cert, err = step(ctx, a, spanSign, func(context.Context) (*x509.Certificate, error) { return signing.Issuer.Sign(prepared) })
	}
	if err != nil {
		var lintErr *issuance.LintError
		if errors.As(err, &lintErr) {
			return nil, a.refused(ctx, in.event, newError(KindLintFailed, err, "certificate refused before signing: %v", err))
		}
		if errors.Is(err, issuance.ErrInvalidRequest) {
			// Policy decides first, so this is a request policy let
			// through that the issuer cannot certify: the caller's to fix.
			return nil, a.refused(ctx, in.event, newError(KindInvalid, err, "the certificate cannot be issued as asked: %v", err))
		}
		return nil, a.refused(ctx, in.event, newError(KindInternal, err, "signing failed: %v", err))
	}
	rec := store.Certificate{
		Serial:      SerialHex(cert),
		Fingerprint: Fingerprint(cert.Raw),
		Identity:    dec.Identity.Primary(),
		SANs:        dec.Identity.SANs(),
		Profile:     dec.Profile,
		Requester:   in.req.Requester,
		SourceAddr:  addrString(in.req.Source),
		NotBefore:   cert.NotBefore,
		NotAfter:    cert.NotAfter,
		Issuer:      signing.ID,
		Status:      store.StatusActive,
		RenewedFrom: in.renewedFrom,
		Owner:       in.owner,
		DER:         cert.Raw,
	}
	rec.ChainStartedAt = in.chainStart
	if rec.ChainStartedAt.IsZero() {
		rec.ChainStartedAt = cert.NotBefore
	}
	if in.token != nil {
		rec.TokenJTI = in.token.JTI
	}
	ev := in.event
	ev.Time, ev.Action, ev.Outcome, ev.Detail = a.now(), in.action, "ok", in.detail
	ev.Serial, ev.Fingerprint, ev.Identity, ev.Profile = rec.Serial, rec.Fingerprint, rec.Identity, rec.Profile
	iss := &store.Issuance{Certificate: rec, Event: ev, Token: in.token, Names: nameStrings(dec.Identity), Renews: in.renewedFrom}
	if _, err := step(ctx, a, spanCommit, func(ctx context.Context) (struct{}, error) {
		// The commit is waited for even when the client has gone (the
		// store bounds the wait): a certificate queued for commit may be
		// committed, so only its outcome says what to log and answer.
		return struct{}{}, a.store.RecordIssuance(context.WithoutCancel(ctx), iss)
	}); err != nil {
		if errors.Is(err, store.ErrTokenUsed) {
			return nil, a.refused(ctx, in.event, newError(KindTokenReplayed, err,
				"token %s was already used: tokens work once; ask an admin for a new one with `mica token create`", in.token.JTI))
		}
		if denied := (*store.DeniedError)(nil); errors.As(err, &denied) {
			return nil, a.refused(ctx, in.event, deniedError(denied.Name))
		}
		if errors.Is(err, store.ErrRenewedRevoked) {
			return nil, a.refused(ctx, in.event, newError(KindCertRevoked, err,
				"certificate %s is revoked and cannot be renewed: enroll again with a new token", in.renewedFrom))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, newError(KindInternal, err, "the store did not confirm the certificate in time, so it may yet be committed: "+
				"a retry with the same token and key returns it if it was: %v", err)
		}
		// A failed commit may still have committed (a connection lost
		// during COMMIT), so say only what the client can do.
		return nil, newError(KindInternal, err, "could not record the certificate: %v; "+
			"a retry with the same token and key returns it if it was recorded, or issues it if not", err)
	}
	rec.EventSeq = iss.Event.Seq
	a.log.LogAttrs(ctx, slog.LevelInfo, "certificate issued",
		slog.String("serial", rec.Serial), slog.String("identity", rec.Identity),
		slog.String("profile", rec.Profile), slog.String("action", string(in.action)),
		slog.Time("not_after", rec.NotAfter))
	return &Issued{Certificate: cert, Chain: signing.Chain, Roots: a.issuers.Trust().Roots, Record: rec, LeafIndex: iss.Event.LeafIndex}, nil
}

// decide asks policy, translating its refusal into the authority's error.
func (a *Authority) decide(req policy.Request) (policy.Decision, error) {
	dec, err := a.policy().Decide(req)
	if err != nil {
		var denied *policy.DeniedError
		if errors.As(err, &denied) {
			return dec, &Error{Kind: KindPolicyDenied, Reason: string(denied.Reason), Detail: denied.Detail, Err: err}
		}
		return dec, newError(KindInternal, err, "policy evaluation failed: %v", err)
	}
	return dec, nil
}

// refused records an authenticated request's refusal and returns e. A
// failure to record is logged, not returned: the caller's answer is the
// refusal either way.
func (a *Authority) refused(ctx context.Context, ev store.Event, e *Error) error {
	ev.Time, ev.Action, ev.Outcome, ev.Detail = a.now(), store.ActionIssuanceRefused, e.Outcome(), e.Detail
	if err := a.store.RecordEvent(context.WithoutCancel(ctx), &ev); err != nil {
		a.log.LogAttrs(ctx, slog.LevelError, "could not record refusal", slog.String("error", err.Error()))
	}
	a.log.LogAttrs(ctx, slog.LevelWarn, "issuance refused",
		slog.String("actor", ev.Actor), slog.String("identity", ev.Identity), slog.String("outcome", ev.Outcome))
	return e
}

// Fingerprint is the lower-case hex SHA-256 of der.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

// IssueInternal issues a certificate that mica makes for itself (its first
// admin credential at init, its own server certificate) under a reserved
// profile. It runs the same decide → lint → sign → record path as any
// request; only the authentication step is replaced by "system".
func (a *Authority) IssueInternal(ctx context.Context, profile string, id identity.Identity, pub crypto.PublicKey, ttl time.Duration) (iss *Issued, err error) {
	ctx, tr := a.track(ctx, "authority.IssueInternal", policy.MethodInternal)
	defer func() { tr.end(iss, err) }()
	tr.profile = profile
	if !strings.HasPrefix(profile, ReservedProfilePrefix) {
		return nil, fmt.Errorf("authority: internal issuance is only for %s* profiles, not %q", ReservedProfilePrefix, profile)
	}
	return a.issue(ctx, issueInput{
		req:   policy.Request{Profile: profile, Identity: id, TTL: ttl, PublicKey: pub, Method: policy.MethodInternal, Requester: "system"},
		event: store.Event{Actor: "system", Identity: id.Primary(), Profile: profile}, action: store.ActionCertIssued,
		detail: "issued by mica for its own use", owner: "system",
	})
}

// IssueOCSPResponder issues the delegated OCSP responder certificate of the
// issuing CA issuer (an ID, the CA's fingerprint), signed by that CA, under
// the reserved OCSP profile, for the responder's SPIFFE ID under
// OCSPPathPrefix: decided, linted, signed and recorded in the inventory
// and the audit log like any certificate. It never outlives the CA.
func (a *Authority) IssueOCSPResponder(ctx context.Context, issuer string, id identity.Identity, pub crypto.PublicKey) (iss *Issued, err error) {
	ctx, tr := a.track(ctx, "authority.IssueOCSPResponder", policy.MethodInternal)
	defer func() { tr.end(iss, err) }()
	tr.profile = ProfileOCSP
	return a.issue(ctx, issueInput{
		req:   policy.Request{Profile: ProfileOCSP, Identity: id, PublicKey: pub, Method: policy.MethodInternal, Requester: "system"},
		event: store.Event{Actor: "system", Identity: id.Primary(), Profile: ProfileOCSP}, action: store.ActionCertIssued,
		detail: "OCSP responder certificate for issuing CA " + issuer, owner: "system", issuer: issuer,
	})
}
