package authority

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/store"
)

// Web console sign-in. The console never sees a password: an administrator
// asks for a one-time link with its credential over mTLS (`mica console
// login`), or presents a client certificate from the browser, and gets a
// short session bound to that credential and the roles it held then. A
// session is a bearer secret in a cookie, kept here only as its SHA-256.
// Every request of a session is authenticated again (ResumeConsoleSession):
// the credential must still be active and unexpired and the roles still
// held, so revoking the credential or ending a grant ends the session's
// powers at its next request. Links, sessions and their ends are audit
// events.

const (
	// ConsoleLinkTTL is how long a sign-in link may wait to be opened.
	ConsoleLinkTTL = time.Minute
	// ConsoleSessionTTL is the longest a console session lasts; never past
	// its credential's expiry.
	ConsoleSessionTTL = time.Hour
	// consolePurgeAfter is how long ended sessions and dead links are
	// kept before they are deleted (their events stay in the log).
	consolePurgeAfter = 7 * 24 * time.Hour
)

// Session methods.
const (
	ConsoleByLink        = "link"
	ConsoleByCertificate = "certificate"
)

// ConsoleLink is a one-time sign-in link's secret, for the URL.
type ConsoleLink struct {
	Secret    string
	Identity  string
	ExpiresAt time.Time
}

// ConsoleSession is a console session and the principal it acts as now.
type ConsoleSession struct {
	// Secret is the session cookie's value; set only when the session was
	// just opened.
	Secret string
	// ID names the session in the audit log: the start of its hash.
	ID        string
	Principal Principal
	Method    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func secretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// validSecret bounds what is hashed and looked up.
func validSecret(s string) bool {
	return len(s) == 43 && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

func roleNames(roles []Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return out
}

// CreateConsoleLink makes a one-time sign-in link for p, who must hold a
// role (an administrator's credential).
func (a *Authority) CreateConsoleLink(ctx context.Context, p Principal, source netip.Addr) (ConsoleLink, error) {
	if err := a.Authorize(p, ActConsoleSignIn, Resource{}); err != nil {
		return ConsoleLink{}, err
	}
	if p.Record.Serial == "" {
		return ConsoleLink{}, newError(KindForbidden, nil, "%s has no credential of its own to sign in with", p.Name)
	}
	now := a.now()
	secret := newSecret()
	l := store.ConsoleLink{Hash: secretHash(secret), Serial: p.Record.Serial, Identity: p.Name, Roles: roleNames(p.Roles),
		CreatedAt: now, ExpiresAt: now.Add(ConsoleLinkTTL)}
	ev := store.Event{Time: now, Actor: p.Name, Source: addrString(source), Action: store.ActionConsoleLinkCreated, Serial: p.Record.Serial,
		Identity: p.Name, Outcome: "ok", Detail: fmt.Sprintf("one-time console link until %s, roles %s", l.ExpiresAt.Format(time.RFC3339), strings.Join(l.Roles, ", "))}
	if err := a.store.CreateConsoleLink(ctx, &l, &ev); err != nil {
		return ConsoleLink{}, newError(KindInternal, err, "could not record the console link: %v", err)
	}
	return ConsoleLink{Secret: secret, Identity: p.Name, ExpiresAt: l.ExpiresAt}, nil
}

const errLinkSpent = "this sign-in link was used already or has expired (links work once, for %s): run `mica console login` again"

// ConsoleLinkIdentity says whom an unused link would sign in, without
// using it, so the sign-in page can show it before the person confirms.
func (a *Authority) ConsoleLinkIdentity(ctx context.Context, secret string) (string, error) {
	if !validSecret(secret) {
		return "", newError(KindUnauthenticated, nil, "this is not a console sign-in link: run `mica console login` for one")
	}
	l, err := a.store.ConsoleLink(ctx, secretHash(secret))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", newError(KindUnauthenticated, err, errLinkSpent, ConsoleLinkTTL)
	case err != nil:
		return "", newError(KindInternal, err, "could not read the sign-in link: %v", err)
	case !l.UsedAt.IsZero() || !a.now().Before(l.ExpiresAt):
		return "", newError(KindUnauthenticated, nil, errLinkSpent, ConsoleLinkTTL)
	}
	return l.Identity, nil
}

// OpenConsoleSession uses a one-time link, once, and opens a session bound
// to the link's credential and the roles it held when the link was made
// (those it still holds).
func (a *Authority) OpenConsoleSession(ctx context.Context, linkSecret string, source netip.Addr) (ConsoleSession, error) {
	if !validSecret(linkSecret) {
		a.failedAuth(source, "console-link-invalid")
		return ConsoleSession{}, newError(KindUnauthenticated, nil, "this is not a console sign-in link: run `mica console login` for one")
	}
	hash := secretHash(linkSecret)
	l, err := a.store.ConsoleLink(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		a.failedAuth(source, "console-link-invalid")
		return ConsoleSession{}, newError(KindUnauthenticated, err, errLinkSpent, ConsoleLinkTTL)
	}
	if err != nil {
		return ConsoleSession{}, newError(KindInternal, err, "could not read the sign-in link: %v", err)
	}
	p, err := a.principalOf(ctx, l.Serial, l.Roles)
	if err != nil {
		return ConsoleSession{}, err
	}
	return a.openSession(ctx, p, ConsoleByLink, source, func(s *store.ConsoleSession, ev *store.Event) error {
		err := a.store.RedeemConsoleLink(ctx, hash, s, ev)
		if errors.Is(err, store.ErrConflict) {
			a.failedAuth(source, "console-link-spent")
			return newError(KindUnauthenticated, err, errLinkSpent, ConsoleLinkTTL)
		}
		return err
	})
}

// OpenConsoleSessionWithCertificate opens a session for a browser that
// presented an administrator's client certificate.
func (a *Authority) OpenConsoleSessionWithCertificate(ctx context.Context, chain []*x509.Certificate, source netip.Addr) (ConsoleSession, error) {
	p, err := a.AuthenticateFrom(ctx, chain, source)
	if err != nil {
		return ConsoleSession{}, err
	}
	if err := a.Authorize(p, ActConsoleSignIn, Resource{}); err != nil {
		return ConsoleSession{}, err
	}
	return a.openSession(ctx, p, ConsoleByCertificate, source, func(s *store.ConsoleSession, ev *store.Event) error {
		return a.store.CreateConsoleSession(ctx, s, ev)
	})
}

func (a *Authority) openSession(ctx context.Context, p Principal, method string, source netip.Addr,
	write func(*store.ConsoleSession, *store.Event) error) (ConsoleSession, error) {
	if err := a.Authorize(p, ActConsoleSignIn, Resource{}); err != nil {
		return ConsoleSession{}, err
	}
	now := a.now()
	secret := newSecret()
	s := store.ConsoleSession{Hash: secretHash(secret), Serial: p.Record.Serial, Identity: p.Name, Roles: roleNames(p.Roles),
		Method: method, Source: addrString(source), CreatedAt: now, ExpiresAt: now.Add(ConsoleSessionTTL)}
	if p.Record.NotAfter.Before(s.ExpiresAt) {
		s.ExpiresAt = p.Record.NotAfter
	}
	if !s.ExpiresAt.After(now) {
		return ConsoleSession{}, newError(KindCertExpired, nil, "credential %s has expired: renew it before signing in", p.Record.Serial)
	}
	id := s.Hash[:12]
	ev := store.Event{Time: now, Actor: p.Name, Source: s.Source, Action: store.ActionConsoleSessionCreated, Serial: p.Record.Serial,
		Identity: p.Name, Outcome: "ok", Detail: fmt.Sprintf("console session %s by %s until %s, roles %s", id, method, s.ExpiresAt.Format(time.RFC3339), strings.Join(s.Roles, ", "))}
	if err := write(&s, &ev); err != nil {
		if KindOf(err) != KindInternal {
			return ConsoleSession{}, err
		}
		return ConsoleSession{}, newError(KindInternal, err, "could not open the console session: %v", err)
	}
	a.log.Info("console session opened", "session", id, "identity", p.Name, "method", method)
	return ConsoleSession{Secret: secret, ID: id, Principal: p, Method: method, CreatedAt: now, ExpiresAt: s.ExpiresAt}, nil
}

// ResumeConsoleSession authenticates one request of a session: it must be
// open, and its credential still active and unexpired; it acts with the
// roles it began with that the credential still holds. A session whose
// credential was revoked or expired, or that holds no role any more, or
// whose time is up, is ended (with its audit event) and refused.
func (a *Authority) ResumeConsoleSession(ctx context.Context, secret string) (ConsoleSession, error) {
	if !validSecret(secret) {
		return ConsoleSession{}, newError(KindUnauthenticated, nil, "no console session: sign in with a link from `mica console login`")
	}
	hash := secretHash(secret)
	s, err := a.store.ConsoleSession(ctx, hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ConsoleSession{}, newError(KindUnauthenticated, err, "no console session: sign in with a link from `mica console login`")
	case err != nil:
		return ConsoleSession{}, newError(KindInternal, err, "could not read the console session: %v", err)
	case !s.EndedAt.IsZero():
		return ConsoleSession{}, newError(KindUnauthenticated, nil, "the console session ended (%s): sign in again with a link from `mica console login`", s.EndReason)
	}
	end := func(reason string) error {
		if err := a.endSession(ctx, s, SystemPrincipal, reason); err != nil && KindOf(err) == KindInternal {
			return err
		}
		return newError(KindUnauthenticated, nil, "the console session ended (%s): sign in again with a link from `mica console login`", reason)
	}
	if !a.now().Before(s.ExpiresAt) {
		return ConsoleSession{}, end("its time was up")
	}
	p, err := a.principalOf(ctx, s.Serial, s.Roles)
	if err != nil {
		if KindOf(err) == KindInternal {
			return ConsoleSession{}, err
		}
		var e *Error
		errors.As(err, &e)
		return ConsoleSession{}, end(e.Detail)
	}
	return ConsoleSession{ID: hash[:12], Principal: p, Method: s.Method, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt}, nil
}

// principalOf rebuilds the principal of the credential serial as it stands
// now, with the roles of began that it still holds. It refuses a
// credential that is no longer active, unexpired and holding a role.
func (a *Authority) principalOf(ctx context.Context, serial string, began []string) (Principal, error) {
	rec, err := a.store.Certificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Principal{}, newError(KindUnauthenticated, err, "credential %s is not in the inventory", serial)
	case err != nil:
		return Principal{}, newError(KindInternal, err, "could not read credential %s: %v", serial, err)
	case rec.Status == store.StatusRevoked:
		return Principal{}, newError(KindCertRevoked, nil, "credential %s was revoked", serial)
	case !a.now().Before(rec.NotAfter):
		return Principal{}, newError(KindCertExpired, nil, "credential %s expired", serial)
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return Principal{}, newError(KindInternal, err, "credential %s does not parse: %v", serial, err)
	}
	id, err := identity.FromCertificate(cert)
	if err != nil {
		return Principal{}, newError(KindUnauthenticated, err, "credential %s carries no usable identity: %v", serial, err)
	}
	now, err := a.rolesOf(ctx, id, rec)
	if err != nil {
		return Principal{}, err
	}
	var roles []Role
	for _, r := range now {
		if slices.Contains(began, string(r)) {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return Principal{}, newError(KindForbidden, nil, "%s holds none of the roles it signed in with any more", id.Primary())
	}
	return Principal{Name: id.Primary(), Roles: roles, Certificate: cert, Record: rec}, nil
}

// EndConsoleSession ends a session at its holder's request (signing out).
func (a *Authority) EndConsoleSession(ctx context.Context, secret, reason string) error {
	if !validSecret(secret) {
		return nil
	}
	s, err := a.store.ConsoleSession(ctx, secretHash(secret))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return newError(KindInternal, err, "could not read the console session: %v", err)
	}
	if !s.EndedAt.IsZero() {
		return nil
	}
	return a.endSession(ctx, s, s.Identity, reason)
}

func (a *Authority) endSession(ctx context.Context, s store.ConsoleSession, actor, reason string) error {
	now := a.now()
	ev := store.Event{Time: now, Actor: actor, Action: store.ActionConsoleSessionEnded, Serial: s.Serial, Identity: s.Identity,
		Outcome: "ok", Detail: fmt.Sprintf("console session %s ended: %s", s.Hash[:12], reason)}
	err := a.store.EndConsoleSession(ctx, s.Hash, now, reason, &ev)
	if errors.Is(err, store.ErrConflict) {
		return newError(KindConflict, err, "the console session had ended already")
	}
	if err != nil {
		return newError(KindInternal, err, "could not end the console session: %v", err)
	}
	a.log.Info("console session ended", "session", s.Hash[:12], "identity", s.Identity, "reason", reason)
	return nil
}

// EndLapsedConsoleSessions records the end of sessions whose time ran out
// without another request, and deletes links and sessions dead for a
// week. A server runs it every minute or so; it returns how many ended.
func (a *Authority) EndLapsedConsoleSessions(ctx context.Context) (int, error) {
	now := a.now()
	lapsed, err := a.store.LapsedConsoleSessions(ctx, now, 100)
	if err != nil {
		return 0, newError(KindInternal, err, "could not list lapsed console sessions: %v", err)
	}
	n := 0
	for _, s := range lapsed {
		switch err := a.endSession(ctx, s, SystemPrincipal, "its time was up"); {
		case err == nil:
			n++
		case KindOf(err) != KindConflict: // another replica ended it first
			return n, err
		}
	}
	if err := a.store.PurgeConsole(ctx, now.Add(-consolePurgeAfter)); err != nil {
		return n, newError(KindInternal, err, "could not purge old console records: %v", err)
	}
	return n, nil
}

// ExpiryTimeline counts the live certificates expiring on each of the next
// days (UTC days, today first), by profile: an aggregate for the console's
// timeline (report:read). It returns the first day's start.
func (a *Authority) ExpiryTimeline(ctx context.Context, p Principal, days int) ([]store.DayCount, time.Time, error) {
	if err := a.Authorize(p, ActReportRead, Resource{}); err != nil {
		return nil, time.Time{}, err
	}
	if days < 1 || days > 366 {
		return nil, time.Time{}, newError(KindInvalid, nil, "a timeline covers 1 to 366 days, not %d", days)
	}
	now := a.now().UTC()
	from := now.Truncate(24 * time.Hour)
	counts, err := a.store.ExpiryTimeline(ctx, store.TimelineFilter{Now: now, From: from, Days: days})
	if err != nil {
		return nil, from, newError(KindInternal, err, "could not count expiries: %v", err)
	}
	return counts, from, nil
}
