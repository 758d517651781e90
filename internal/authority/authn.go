package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/store"
)

// SystemPrincipal is mica acting for itself (its own certificates, CA
// events); no request can authenticate as it.
const SystemPrincipal = "system"

// Principal is an authenticated caller.
type Principal struct {
	Name string // the certificate's primary identity, or acme:<account>, or "system"
	// Roles are granted only to an active certificate issued under the
	// reserved admin profile: those the policy's admins section gives its
	// SPIFFE ID and those granted to it for a time (rolesOf). Every other
	// caller has none.
	Roles       []Role
	Certificate *x509.Certificate
	Record      store.Certificate // the inventory record of Certificate
	// Token is the ID of the enrollment token that authenticated the
	// request (Enroll): it binds the identity and profile, once.
	Token string
	// CertKey is the serial of a certificate whose own key signed the
	// request (ACME revocation), proving possession of that certificate.
	CertKey string
	// Approval, when set, is the approval request this principal is
	// carrying out: the requester, rebuilt to run what others approved.
	Approval string
	// configFile marks a server's own config file (ConfigFile).
	configFile bool
}

// ConfigFile is the principal of a server's config file proposing its
// policy (on SIGHUP): it may propose and activate policy versions and
// nothing else, and the policy's approval rules hold for it as for anyone,
// so a shell on one server does not bypass the approvers.
func ConfigFile(path string) Principal {
	return Principal{Name: "config file " + path, configFile: true}
}

// System reports whether p is mica itself.
func (p Principal) System() bool { return p.Name == SystemPrincipal && p.Certificate == nil }

// authenticated reports whether p proved who it is: a certificate in the
// inventory, or an approved request being carried out.
func (p Principal) authenticated() bool { return p.Record.Serial != "" || p.Approval != "" }

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
	return a.AuthenticateConn(ctx, nil, chain, source)
}

// ConnMemo remembers what the authority learnt from a client connection's
// first request: that its chain verified, and the leaf's inventory record.
// A TLS connection's peer certificates do not change for its whole life,
// so later requests on it skip building and checking the path and reading
// the whole record. What can change is checked on every request all the
// same: the time against every certificate of the path, the trust anchors,
// and the leaf's status in the inventory (revoked or not). A door keeps
// one per connection (the REST API: http.Server.ConnContext); the zero
// value is ready, and it is safe for concurrent use.
type ConnMemo struct {
	verified atomic.Pointer[verifiedChain]
}

// verifiedChain is a chain that verified and whose leaf is in the
// inventory: the certificates as presented, the roots it verified
// against, the window in which every certificate of the path is valid,
// the leaf's identity and its record as first read. It is not changed
// once made.
type verifiedChain struct {
	presented           []*x509.Certificate
	roots               *x509.CertPool
	notBefore, notAfter time.Time
	id                  identity.Identity
	record              store.Certificate
}

// lookup returns what m remembers about chain if it was verified against
// roots and the path is valid at now.
func (m *ConnMemo) lookup(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) *verifiedChain {
	if m == nil {
		return nil
	}
	v := m.verified.Load()
	if v == nil || v.roots != roots || now.Before(v.notBefore) || now.After(v.notAfter) || !slices.Equal(v.presented, chain) {
		return nil
	}
	return v
}

// AuthenticateConn is AuthenticateFrom for a request on a connection whose
// memo is m (nil: verify the chain and read the record every time).
func (a *Authority) AuthenticateConn(ctx context.Context, m *ConnMemo, chain []*x509.Certificate, source netip.Addr) (Principal, error) {
	return a.authenticateStep(ctx, m, chain, source, false)
}

// AuthenticateRenewal is AuthenticateConn for a request that will only
// renew the certificate (Renew). On a connection whose memo knows the
// chain it does not read the certificate's status: the renewal's commit
// refuses a certificate that is no longer active (store.Issuance.Renews),
// in the transaction that would record its successor, which is both
// cheaper and later than any read here could be.
func (a *Authority) AuthenticateRenewal(ctx context.Context, m *ConnMemo, chain []*x509.Certificate, source netip.Addr) (Principal, error) {
	return a.authenticateStep(ctx, m, chain, source, true)
}

func (a *Authority) authenticateStep(ctx context.Context, m *ConnMemo, chain []*x509.Certificate, source netip.Addr, renewal bool) (Principal, error) {
	p, err := step(ctx, a, spanAuthenticate, func(ctx context.Context) (Principal, error) { return a.authenticate(ctx, m, chain, source, renewal) })
	if err != nil && KindOf(err) != KindInternal {
		a.failedAuth(source, err.(*Error).Outcome())
	}
	return p, err
}

// authenticate judges chain; renewal skips the status read a warm memo
// would otherwise need (see AuthenticateRenewal).
func (a *Authority) authenticate(ctx context.Context, m *ConnMemo, chain []*x509.Certificate, source netip.Addr, renewal bool) (Principal, error) {
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
	var rec store.Certificate
	trust := a.issuers.Trust()
	v := m.lookup(chain, trust.rootPool, now)
	switch {
	case v != nil && renewal && v.record.Profile != ProfileAdmin:
		// An administrator's credential is read every time all the same:
		// it is refused the moment it is revoked, renewal or not.
		rec = v.record
	case v != nil:
		st, err := a.store.CertificateStatus(ctx, v.record.Serial)
		if err != nil {
			return Principal{}, lookupError(v.record.Serial, err)
		}
		rec = v.record
		rec.Status, rec.RevokedAt, rec.RevocationReason = st.Status, st.RevokedAt, st.RevocationReason
	default:
		var err error
		if v, err = a.verifyChain(ctx, trust, chain, source, now); err != nil {
			return Principal{}, err
		}
		serial := SerialHex(leaf)
		if rec, err = a.store.CertificateWithoutDER(ctx, serial); err != nil {
			return Principal{}, lookupError(serial, err)
		}
		if rec.Fingerprint != Fingerprint(leaf.Raw) {
			return Principal{}, newError(KindUnauthenticated, nil, "client certificate %s does not match the inventory record", rec.Serial)
		}
		v.record = rec
		if m != nil {
			m.verified.Store(v)
		}
	}
	if rec.Status == store.StatusRevoked {
		return Principal{}, newError(KindCertRevoked, nil,
			"client certificate %s was revoked at %s and cannot be used or renewed: enroll again with a new token",
			rec.Serial, rec.RevokedAt.Format(time.RFC3339))
	}
	roles, err := a.rolesOf(ctx, v.id, rec)
	if err != nil {
		return Principal{}, err
	}
	return Principal{Name: v.id.Primary(), Roles: roles, Certificate: leaf, Record: rec}, nil
}

// lookupError is the refusal for a client certificate whose record could
// not be read.
func lookupError(serial string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return newError(KindUnauthenticated, err, "client certificate %s is not in this server's inventory", serial)
	}
	return newError(KindInternal, err, "could not look up the client certificate: %v", err)
}

// verifyChain builds and checks a path from chain's leaf to one of mica's
// roots (trust's) at now, for client authentication, and reads the leaf's identity.
func (a *Authority) verifyChain(ctx context.Context, trust *Trust, chain []*x509.Certificate, source netip.Addr, now time.Time) (*verifiedChain, error) {
	leaf := chain[0]
	inter := trust.interPool
	if len(chain) > 1 {
		inter = trust.interPool.Clone()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	paths, err := leaf.Verify(x509.VerifyOptions{
		Roots: trust.rootPool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		a.reportForeignIssuer(ctx, chain, source)
		return nil, newError(KindUnauthenticated, err, "client certificate is not trusted by this server: %v", err)
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return nil, newError(KindUnauthenticated, err, "client certificate carries no usable identity: %v", err)
	}
	// The first path's window: past it, the chain is verified again
	// (and may then find another path, or fail with the reason).
	v := &verifiedChain{presented: slices.Clone(chain), roots: trust.rootPool, id: id}
	for i, c := range paths[0] {
		if i == 0 || c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
	}
	return v, nil
}

// rolesOf is the roles a certificate carries: those the policy's admins
// section gives its SPIFFE ID and those granted to it now, and only when
// the certificate was issued under the reserved admin profile. A
// certificate of any other profile carries no role whatever its name, so
// an operator who could mint a token for an admin's name under an ordinary
// profile gains nothing by it (and the policy refuses reserved names
// outside reserved profiles anyway).
func (a *Authority) rolesOf(ctx context.Context, id identity.Identity, rec store.Certificate) ([]Role, error) {
	if rec.Profile != ProfileAdmin || rec.Status != store.StatusActive || id.SPIFFE.IsZero() {
		return nil, nil
	}
	return a.rolesNow(ctx, id.SPIFFE.String())
}

// rolesNow is the roles an administrator's SPIFFE ID holds now.
func (a *Authority) rolesNow(ctx context.Context, name string) ([]Role, error) {
	roles := slices.Clone(a.access().admins[name])
	grants, err := a.store.Grants(ctx, name, a.now())
	if err != nil {
		return nil, newError(KindInternal, err, "could not read the role grants: %v", err)
	}
	for _, g := range grants {
		if r := Role(g.Role); a.access().HasRole(r) && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	return roles, nil
}
