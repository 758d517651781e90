package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// A certificate is asked for at one of three doors: Enroll (a one-time
// token), Renew (the current certificate, over mutual TLS) and IssueACME
// (an ACME account whose challenges passed). A door does only what is its
// own: it authenticates its caller its way and says, in a doorRequest,
// what the caller asks for. Everything after that is the prelude, the same
// steps in the same order for every door:
//
//  1. the network the credential is bound to, if any (a token may name one);
//  2. authorization: Authorize, with the door's action (ActEnroll,
//     ActRenew, ActACMEIssue);
//  3. the identity the credential names is usable;
//  4. admission by the Guard: rate limits, renewal storms, bursts — before
//     any expensive work;
//  5. the key: a CSR, parsed, its signature checked, not a key the caller
//     may not certify, naming the identity (or nothing, where the
//     credential supplies it); or, to keep a key, a handshake with the
//     certificate itself, which proved it is held.
//
// Then the shared tail, issue: policy (profiles, TTLs, reserved names),
// the deny list, lint, sign, record. A rule that holds at every door goes
// in prelude or issue, never in a door.

// doorRequest is a request for a certificate after its door has
// authenticated the caller.
type doorRequest struct {
	method    policy.Method
	action    Action    // what Authorize is asked
	principal Principal // who Authorize is asked about
	profile   string
	// name is the primary identity as the credential names it, for the
	// audit log and the guard; identity is that identity parsed, and
	// identityErr, when set, says why the credential names no usable one
	// (the refusal to record).
	name        string
	identity    identity.Identity
	identityErr *Error
	// actor is who the audit log names; requester is who answers for the
	// request under the rate limits (a token's creator, the renewing
	// identity, the ACME account).
	actor, requester string
	source           netip.Addr
	// network, when valid, is the only network the credential may be used
	// from; credential names it in the refusal ("token").
	network    netip.Prefix
	credential string
	// serial is the certificate the request authenticated with and renews
	// (Renew), for the audit event.
	serial string
	// lifetime is the lifetime of the certificate being renewed; zero for
	// a first certificate.
	lifetime time.Duration
	ttl      time.Duration

	csr []byte // DER; nil when keepKey
	// keepKey certifies heldKey again without a CSR. heldKey is the key
	// the handshake that authenticated the request proved; nil when none
	// did, and then the key cannot be kept.
	keepKey bool
	heldKey crypto.PublicKey
	// namesRequired: the CSR must name exactly the identity, in any order
	// (ACME orders list their identifiers). Otherwise it names exactly the
	// identity or nothing, and boundBy says what binds the identity, for
	// the refusal.
	namesRequired bool
	boundBy       string
	// notKey is a key the CSR may not carry (the ACME account's: a
	// certificate key is not an account key, as Boulder refuses).
	notKey crypto.PublicKey

	// What issue records.
	recordAction store.Action
	renewedFrom  string
	chainStart   time.Time // zero starts a renewal chain
	owner        string
	detail       string
	token        *store.TokenUse
}

// prelude runs the steps every door shares (see above) and returns what
// issue needs. A refusal after authorization is recorded in the audit log,
// except the guard's, which the guard records (throttled).
func (a *Authority) prelude(ctx context.Context, d *doorRequest) (issueInput, error) {
	ev := store.Event{Actor: d.actor, Source: addrString(d.source), Identity: d.name, Profile: d.profile, Serial: d.serial}
	refuse := func(e *Error) (issueInput, error) { return issueInput{}, a.refused(ctx, ev, e) }

	if d.network.IsValid() && !d.network.Contains(d.source.Unmap()) {
		return refuse(&Error{Kind: KindForbidden, Reason: string(policy.ReasonSourceNotAllowed),
			Detail: fmt.Sprintf("%s may only be used from %s, not from %s", d.credential, d.network, addrString(d.source))})
	}
	if err := a.Authorize(d.principal, d.action, Resource{Serial: d.serial, Profile: d.profile, Identity: d.name}); err != nil {
		return issueInput{}, err
	}
	if d.identityErr != nil {
		return refuse(d.identityErr)
	}
	at := Attempt{Method: d.method, Profile: d.profile, Identity: d.name, Requester: d.requester,
		Source: d.source, Lifetime: d.lifetime, Actor: d.actor}
	if err := a.admit(ctx, at); err != nil {
		return issueInput{}, err
	}
	pub, err := d.key()
	if err != nil {
		return refuse(err)
	}
	req := policy.Request{Profile: d.profile, Identity: d.identity, TTL: d.ttl, PublicKey: pub,
		Method: d.method, Requester: d.actor, Source: d.source}
	if !d.chainStart.IsZero() {
		req.ChainAge = a.now().Sub(d.chainStart)
	}
	return issueInput{req: req, event: ev, action: d.recordAction, renewedFrom: d.renewedFrom, attempt: at,
		detail: d.detail, owner: d.owner, chainStart: d.chainStart, token: d.token}, nil
}

// key is the public key to certify: the held key kept, or the CSR's once
// its signature and names check out.
func (d *doorRequest) key() (crypto.PublicKey, *Error) {
	switch {
	case d.keepKey && d.heldKey == nil:
		// Only a handshake with the certificate proves its key is held.
		return nil, newError(KindBadCSR, nil, "only a renewal authenticated with the certificate itself can keep its key: send a CSR")
	case d.keepKey && len(d.csr) > 0:
		return nil, newError(KindBadCSR, nil, "a renewal that keeps its key sends no CSR: send either one or the other")
	case d.keepKey:
		return d.heldKey, nil
	}
	csr, err := parseCSR(d.csr)
	if err != nil {
		return nil, err
	}
	if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && d.notKey != nil && k.Equal(d.notKey) {
		return nil, newError(KindBadCSR, nil, "the CSR's public key is the ACME account's key: make a new key for the certificate")
	}
	if d.namesRequired {
		err = exactNames(d.identity, csr)
	} else {
		err = sameIdentity(d.identity, csr, d.boundBy)
	}
	if err != nil {
		return nil, err
	}
	return csr.PublicKey, nil
}

func parseCSR(der []byte) (*x509.CertificateRequest, *Error) {
	if len(der) == 0 {
		return nil, newError(KindBadCSR, nil, "no certificate signing request was sent")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, newError(KindBadCSR, err, "the certificate signing request cannot be parsed: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, newError(KindBadCSR, err, "the CSR's signature does not match its public key: sign it with the private key it names")
	}
	return csr, nil
}

// sameIdentity accepts a CSR that names no identity (the credential supplies
// it) or exactly the credential's identity, and nothing else.
func sameIdentity(want identity.Identity, csr *x509.CertificateRequest, what string) *Error {
	if len(csr.URIs) == 0 && len(csr.DNSNames) == 0 && len(csr.IPAddresses) == 0 && len(csr.EmailAddresses) == 0 {
		return nil
	}
	got, err := csrIdentity(csr)
	if err != nil {
		return err
	}
	if !got.Equal(want) {
		return newError(KindIdentityMismatch, nil, "the CSR asks for %s but %s %s: leave the names out of the CSR or ask for exactly those", got, what, want)
	}
	return nil
}

// exactNames accepts a CSR that names exactly want, in any order (ACME
// clients list names as they like).
func exactNames(want identity.Identity, csr *x509.CertificateRequest) *Error {
	got, err := csrIdentity(csr)
	if err != nil {
		return err
	}
	if !slices.Equal(sortedSANs(got), sortedSANs(want)) {
		return newError(KindBadCSR, nil, "the CSR names %s but the order is for %s: the CSR must name exactly the order's identifiers", got, want)
	}
	return nil
}

func csrIdentity(csr *x509.CertificateRequest) (identity.Identity, *Error) {
	if len(csr.EmailAddresses) > 0 {
		return identity.Identity{}, newError(KindBadCSR, nil, "the CSR asks for e-mail addresses; mica issues only SPIFFE IDs, DNS names and IPs")
	}
	got, err := identity.FromCSR(csr)
	if err != nil {
		return identity.Identity{}, newError(KindBadCSR, err, "%v", err)
	}
	return got, nil
}

func sortedSANs(id identity.Identity) []string {
	s := id.SANs()
	slices.Sort(s)
	return s
}
