package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net/netip"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// ACMEPrincipalPrefix begins the requester of every certificate issued to
// an ACME account: "acme:" and the account's URL.
const ACMEPrincipalPrefix = "acme:"

// ACMERequest is an issuance whose identifiers the ACME door has validated
// (RFC 8555 challenges). The account is the principal; the door has
// authenticated it by its JWS signature.
type ACMERequest struct {
	Account  string // the account's URL
	Profile  string // the profile the config names for ACME
	Identity identity.Identity
	CSR      []byte // DER; must name exactly Identity
	// AccountKey is the account's public key, which the CSR must not
	// carry: a certificate key is not an account key (as Boulder refuses).
	AccountKey crypto.PublicKey
	Source     netip.Addr
	// Replaces is the serial of a certificate this one renews, when the
	// client says so (RFC 9773); it must have been issued to the same account.
	Replaces string
}

// IssueACME runs the shared decide → lint → sign → record path for an ACME
// order, with policy.MethodACME so that profiles and rules can tell this
// door apart.
func (a *Authority) IssueACME(ctx context.Context, req ACMERequest) (iss *Issued, err error) {
	ctx, tr := a.track(ctx, "authority.IssueACME", policy.MethodACME)
	defer func() { tr.end(iss, err) }()
	tr.profile = req.Profile
	actor := ACMEPrincipalPrefix + req.Account
	d := &doorRequest{method: policy.MethodACME, action: ActACMEIssue, principal: Principal{Name: actor},
		profile: req.Profile, name: req.Identity.Primary(), identity: req.Identity, actor: actor, requester: actor,
		source: req.Source, csr: req.CSR, namesRequired: true, notKey: req.AccountKey,
		recordAction: store.ActionCertIssued, owner: actor, detail: "issued to ACME account " + req.Account}
	// A renewal (RFC 9773) counts only when the same account ordered the
	// certificate it replaces.
	if req.Replaces != "" {
		if old, err := a.store.Certificate(ctx, req.Replaces); err == nil && old.Requester == actor {
			d.lifetime = old.NotAfter.Sub(old.NotBefore)
			d.recordAction, d.renewedFrom, d.chainStart = store.ActionCertRenewed, old.Serial, chainStartOf(old)
			d.detail = "renewed from " + old.Serial + " by ACME account " + req.Account
		}
	}
	in, err := a.prelude(ctx, d)
	if err != nil {
		return nil, err
	}
	return a.issue(ctx, in)
}

// CheckIdentity says whether profile would allow id, so that a door can
// refuse an order it could never fulfil before asking for challenges.
func (a *Authority) CheckIdentity(profile string, id identity.Identity) error {
	chk, ok := a.policy().(identityChecker)
	if !ok {
		return nil
	}
	if err := chk.CheckIdentity(profile, id); err != nil {
		var denied *policy.DeniedError
		if errors.As(err, &denied) {
			return &Error{Kind: KindPolicyDenied, Reason: string(denied.Reason), Detail: denied.Detail, Err: err}
		}
		return newError(KindInvalid, err, "%v", err)
	}
	return nil
}

// ACMERevocation asks to revoke a certificate through the ACME door, which
// has verified the request's signature either by the account that ordered
// the certificate or by the certificate's own key.
type ACMERevocation struct {
	Account   string // the signing account's URL; empty when signed by the certificate key
	ByCertKey bool   // the request was signed with the certificate's private key
	CertDER   []byte // the certificate as the client sent it
	Reason    int
	Source    netip.Addr
}

// RevokeACME revokes a certificate that this server issued, if the
// requester holds it: its key signed the request, or its account ordered it.
func (a *Authority) RevokeACME(ctx context.Context, req ACMERevocation) (store.Certificate, error) {
	cert, err := x509.ParseCertificate(req.CertDER)
	if err != nil {
		return store.Certificate{}, newError(KindInvalid, err, "the certificate to revoke cannot be parsed: send it DER-encoded")
	}
	rec, err := a.store.Certificate(ctx, SerialHex(cert))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return rec, newError(KindNotFound, err, "certificate %s was not issued by this server", SerialHex(cert))
	case err != nil:
		return rec, newError(KindInternal, err, "could not read the inventory: %v", err)
	case rec.Fingerprint != Fingerprint(cert.Raw):
		return rec, newError(KindNotFound, nil, "certificate %s does not match the one this server issued with that serial", rec.Serial)
	}
	p := Principal{Name: ACMEPrincipalPrefix + req.Account}
	if req.ByCertKey {
		p = Principal{Name: "acme-certificate-key:" + rec.Serial, CertKey: rec.Serial}
	}
	if err := a.Authorize(p, ActACMERevoke, Resource{Serial: rec.Serial, Requester: rec.Requester}); err != nil {
		return rec, err
	}
	return a.revoke(ctx, p.Name, rec.Serial, req.Reason, req.Source)
}
