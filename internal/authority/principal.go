package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/token"
)

// Role is what an authenticated principal may do. Roles come from the
// config file's admins section, keyed by the principal's SPIFFE ID.
type Role string

const (
	RoleNone     Role = ""         // a workload: may renew its own certificate
	RoleAuditor  Role = "auditor"  // may read the inventory
	RoleOperator Role = "operator" // auditor + may create tokens for ordinary profiles
	RoleAdmin    Role = "admin"    // everything
)

// ParseRole reads a role name from the config file.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAuditor, RoleOperator, RoleAdmin:
		return r, nil
	}
	return RoleNone, fmt.Errorf("authority: unknown role %q: use admin, operator or auditor", s)
}

func (r Role) atLeast(min Role) bool {
	rank := map[Role]int{RoleNone: 0, RoleAuditor: 1, RoleOperator: 2, RoleAdmin: 3}
	return rank[r] >= rank[min]
}

// ReservedProfilePrefix marks profiles mica itself defines (its admins'
// and its own server's certificates); only admins may mint tokens for them.
const ReservedProfilePrefix = "mica-"

// Principal is an authenticated caller.
type Principal struct {
	Name        string // the certificate's primary identity
	Role        Role
	Certificate *x509.Certificate
	Record      store.Certificate // the inventory record of Certificate
}

// Authenticate checks a client certificate chain (leaf first, as presented
// in the TLS handshake) against mica's roots at the current time, requires
// the clientAuth usage, and requires the leaf to be an active certificate in
// the inventory. The TLS layer only requests the certificate; judging it here
// gives every door the same rules and a specific error for each failure.
func (a *Authority) Authenticate(ctx context.Context, chain []*x509.Certificate) (Principal, error) {
	return a.AuthenticateFrom(ctx, chain, netip.Addr{})
}

// AuthenticateFrom is Authenticate for a request from source, which is
// named to the AuthFailed hook when authentication fails.
func (a *Authority) AuthenticateFrom(ctx context.Context, chain []*x509.Certificate, source netip.Addr) (Principal, error) {
	p, err := step(ctx, a, spanAuthenticate, func(ctx context.Context) (Principal, error) { return a.authenticate(ctx, chain, source) })
	if err != nil && KindOf(err) != KindInternal {
		a.failedAuth(source, err.(*Error).Outcome())
	}
	return p, err
}

func (a *Authority) authenticate(ctx context.Context, chain []*x509.Certificate, source netip.Addr) (Principal, error) {
	if len(chain) == 0 {
		return Principal{}, newError(KindUnauthenticated, nil, "no client certificate was presented: pass --cert and --key")
	}
	leaf, now := chain[0], a.now()
	if now.After(leaf.NotAfter) {
		return Principal{}, newError(KindCertExpired, nil,
			"client certificate %s expired %s ago and cannot renew: enroll again with a token from `mica token create`",
			SerialHex(leaf), now.Sub(leaf.NotAfter).Round(time.Second))
	}
	if now.Before(leaf.NotBefore) {
		return Principal{}, newError(KindCertExpired, nil, "client certificate %s is not valid until %s: check this machine's clock",
			SerialHex(leaf), leaf.NotBefore.Format(time.RFC3339))
	}
	inter := a.interPool
	if len(chain) > 1 {
		inter = a.interPool.Clone()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: a.rootPool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		a.reportForeignIssuer(ctx, chain, source)
		return Principal{}, newError(KindUnauthenticated, err, "client certificate is not trusted by this server: %v", err)
	}
	rec, err := a.store.Certificate(ctx, SerialHex(leaf))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Principal{}, newError(KindUnauthenticated, err, "client certificate %s is not in this server's inventory", SerialHex(leaf))
	case err != nil:
		return Principal{}, newError(KindInternal, err, "could not look up the client certificate: %v", err)
	case rec.Fingerprint != Fingerprint(leaf.Raw):
		return Principal{}, newError(KindUnauthenticated, nil, "client certificate %s does not match the inventory record", rec.Serial)
	case rec.Status == store.StatusRevoked:
		return Principal{}, newError(KindCertRevoked, nil,
			"client certificate %s was revoked at %s and cannot be used or renewed: enroll again with a new token",
			rec.Serial, rec.RevokedAt.Format(time.RFC3339))
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return Principal{}, newError(KindUnauthenticated, err, "client certificate carries no usable identity: %v", err)
	}
	name := id.Primary()
	return Principal{Name: name, Role: a.admins[name], Certificate: leaf, Record: rec}, nil
}

func (a *Authority) require(p Principal, min Role, what string) error {
	if !p.Role.atLeast(min) {
		who := p.Name
		if who == "" {
			who = "an unauthenticated caller"
		}
		return newError(KindForbidden, nil, "%s may not %s: it needs the %s role in the config's admins section", who, what, min)
	}
	return nil
}

// TokenRequest asks for a one-time enrollment token.
type TokenRequest struct {
	Identity string
	Profile  string
	TTL      time.Duration
	Network  netip.Prefix // optional source network binding
	Source   netip.Addr
}

// Token is a minted token and what it says.
type Token struct {
	Raw    string
	Claims token.Claims
}

// identityChecker is the optional ability of a policy to say early whether a
// profile would allow an identity, so that a token that can never be used is
// refused when it is made, not when it is spent.
type identityChecker interface {
	CheckIdentity(profile string, id identity.Identity) error
}

// DefaultTokenTTL is how long a token lives when the request does not say.
const DefaultTokenTTL = 10 * time.Minute

// CreateToken mints a one-time token bound to one identity and profile.
func (a *Authority) CreateToken(ctx context.Context, p Principal, req TokenRequest) (Token, error) {
	min := RoleOperator
	if strings.HasPrefix(req.Profile, ReservedProfilePrefix) {
		min = RoleAdmin
	}
	if err := a.require(p, min, "create tokens for profile "+req.Profile); err != nil {
		return Token{}, err
	}
	id, err := identity.Parse(req.Identity)
	if err != nil {
		return Token{}, newError(KindInvalid, err, "%v", err)
	}
	if req.Profile == "" {
		return Token{}, newError(KindInvalid, nil, "a token needs a profile: pass --profile")
	}
	if chk, ok := a.policy.(identityChecker); ok {
		if err := chk.CheckIdentity(req.Profile, id); err != nil {
			var denied *policy.DeniedError
			if errors.As(err, &denied) {
				return Token{}, &Error{Kind: KindPolicyDenied, Reason: string(denied.Reason), Detail: denied.Detail, Err: err}
			}
			return Token{}, newError(KindInvalid, err, "%v", err)
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > token.MaxLifetime {
		return Token{}, newError(KindInvalid, nil, "token TTL %s is out of range: choose between 1s and %s", ttl, token.MaxLifetime)
	}
	now := a.now()
	c := token.Claims{
		ID: token.NewID(), Identity: strings.Join(id.SANs(), ","), Profile: req.Profile, Issuer: p.Name,
		IssuedAt: now, Expiry: now.Add(ttl), Network: req.Network.Masked(),
		RootFingerprint: Fingerprint(a.roots[0].Raw),
	}
	raw, err := a.minter.Mint(c)
	if err != nil {
		return Token{}, newError(KindInternal, err, "could not sign the token: %v", err)
	}
	// The event names the token by its jti only: the token itself is a
	// bearer secret and must not be in the audit record.
	ev := store.Event{Time: now, Actor: p.Name, Source: addrString(req.Source), Action: store.ActionTokenCreated,
		Identity: id.Primary(), Profile: req.Profile, Outcome: "ok",
		Detail: fmt.Sprintf("token %s expires %s", c.ID, c.Expiry.UTC().Format(time.RFC3339))}
	if req.Network.IsValid() {
		ev.Detail += ", bound to " + req.Network.Masked().String()
	}
	if err := a.store.RecordEvent(ctx, &ev); err != nil {
		return Token{}, newError(KindInternal, err, "could not record the token; none was issued: %v", err)
	}
	return Token{Raw: raw, Claims: c}, nil
}

// ListCertificates reads the inventory.
func (a *Authority) ListCertificates(ctx context.Context, p Principal, f store.Filter) ([]store.Certificate, error) {
	if err := a.require(p, RoleAuditor, "read the inventory"); err != nil {
		return nil, err
	}
	if f.Now.IsZero() {
		f.Now = a.now()
	}
	certs, err := a.store.ListCertificates(ctx, f)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	return certs, nil
}

// Certificate reads one inventory record. A principal may always read its
// own certificate.
func (a *Authority) Certificate(ctx context.Context, p Principal, serial string) (store.Certificate, error) {
	if p.Record.Serial != serial {
		if err := a.require(p, RoleAuditor, "read the inventory"); err != nil {
			return store.Certificate{}, err
		}
	}
	rec, err := a.store.Certificate(ctx, strings.ToLower(serial))
	if errors.Is(err, store.ErrNotFound) {
		return rec, newError(KindNotFound, err, "no certificate with serial %s: list them with `mica cert list`", serial)
	}
	if err != nil {
		return rec, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	return rec, nil
}

// Revoke marks a certificate revoked. Admins may revoke any certificate; a
// holder may revoke its own.
func (a *Authority) Revoke(ctx context.Context, p Principal, serial string, reason int, source netip.Addr) (store.Certificate, error) {
	serial = strings.ToLower(serial)
	if p.Record.Serial != serial {
		if err := a.require(p, RoleAdmin, "revoke other certificates"); err != nil {
			return store.Certificate{}, err
		}
	}
	if err := checkReason(reason); err != nil {
		return store.Certificate{}, err
	}
	now := a.now()
	ev := store.Event{Time: now, Actor: p.Name, Source: addrString(source), Action: store.ActionCertRevoked,
		Serial: serial, Outcome: "ok", Detail: fmt.Sprintf("reason %d", reason)}
	rec, err := a.store.Certificate(ctx, serial)
	if err == nil {
		ev.Fingerprint, ev.Identity, ev.Profile = rec.Fingerprint, rec.Identity, rec.Profile
		err = a.store.Revoke(ctx, serial, reason, now, &ev)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return rec, newError(KindNotFound, err, "no certificate with serial %s", serial)
	case errors.Is(err, store.ErrAlreadyRevoked):
		return rec, newError(KindConflict, err, "certificate %s is already revoked", serial)
	case err != nil:
		return rec, newError(KindInternal, err, "could not revoke: %v", err)
	}
	a.onRevoke()
	if a.observer != nil {
		a.observer.ObserveRevocations(reason, 1)
	}
	rec.Status, rec.RevokedAt, rec.RevocationReason = store.StatusRevoked, now, reason
	return rec, nil
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

// Bundle is the trust bundle: the roots, and the intermediates they vouch for.
func (a *Authority) Bundle() (roots, intermediates []*x509.Certificate) {
	return a.roots, []*x509.Certificate{a.issuerCert}
}

// RecordSystemEvent records something mica did on its own behalf (CA
// created, policy loaded) in the same event log as every request.
func (a *Authority) RecordSystemEvent(ctx context.Context, action store.Action, detail string) error {
	ev := store.Event{Time: a.now(), Actor: "system", Action: action, Outcome: "ok", Detail: detail}
	if err := a.store.RecordEvent(ctx, &ev); err != nil {
		return fmt.Errorf("authority: recording %s: %w", action, err)
	}
	return nil
}
