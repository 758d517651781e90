package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/store"
)

// ReasonIdentityDenied is the Reason of the refusal of an identity on the
// deny list.
const ReasonIdentityDenied = "identity-denied"

// checkDenied refuses an identity any of whose names is on the deny list.
// The list holds names in canonical text, whose kind the text says without
// ambiguity (a DNS name can be neither an address nor a spiffe:// URI), so
// a name matches only an entry of its own kind.
func (a *Authority) checkDenied(ctx context.Context, id identity.Identity) *Error {
	for _, n := range nameStrings(id) {
		denied, err := a.store.IsDenied(ctx, n)
		if err != nil {
			return newError(KindInternal, err, "could not read the deny list; nothing was issued: %v", err)
		}
		if denied {
			return deniedError(n)
		}
	}
	return nil
}

// deniedError is the refusal of an identity whose name is on the deny list.
func deniedError(name string) *Error {
	return &Error{Kind: KindForbidden, Reason: ReasonIdentityDenied,
		Detail: fmt.Sprintf("identity %s is on the deny list and can be neither issued nor renewed: an admin lifts it with `mica identity allow %s`", name, name)}
}

// nameStrings are the names of id in the canonical text the deny list
// holds.
func nameStrings(id identity.Identity) []string {
	names := id.Names()
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n.String()
	}
	return out
}

func checkReason(reason int) error {
	if reason < 0 || reason > 10 || reason == 7 {
		return newError(KindInvalid, nil, "revocation reason %d is not an RFC 5280 CRLReason code", reason)
	}
	return nil
}

// RevokeByFingerprint revokes the certificate whose DER has this SHA-256
// fingerprint (hex). Admins may revoke any certificate; a holder its own.
func (a *Authority) RevokeByFingerprint(ctx context.Context, p Principal, fingerprint string, reason int, source netip.Addr) (store.Certificate, error) {
	fingerprint = strings.ToLower(strings.ReplaceAll(fingerprint, ":", ""))
	rec, err := a.store.CertificateByFingerprint(ctx, fingerprint)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Say "forbidden" to whoever may not revoke, rather than whether
		// the fingerprint exists.
		if aerr := a.Authorize(p, ActCertRevoke, Resource{}); aerr != nil {
			return store.Certificate{}, aerr
		}
		return rec, newError(KindNotFound, err, "no certificate with SHA-256 fingerprint %s: list them with `mica cert list`", fingerprint)
	case err != nil:
		return rec, newError(KindInternal, err, "could not read the inventory: %v", err)
	}
	return a.Revoke(ctx, p, rec.Serial, reason, source)
}

// RevokeIdentity revokes every live certificate of an identity in one
// transaction (admins only) and returns them, revoked.
func (a *Authority) RevokeIdentity(ctx context.Context, p Principal, id string, reason int, source netip.Addr) ([]store.Certificate, error) {
	parsed, err := identity.Parse(id)
	if err != nil {
		if aerr := a.Authorize(p, ActIdentityRevoke, Resource{}); aerr != nil {
			return nil, aerr
		}
		return nil, newError(KindInvalid, err, "%v", err)
	}
	name := parsed.Primary()
	if err := a.Authorize(p, ActIdentityRevoke, Resource{Identity: name}); err != nil {
		return nil, err
	}
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	if err := a.gate(ctx, p, ActIdentityRevoke, Resource{Identity: name}, revokeIdentityParams{Identity: name, Reason: reason}, ""); err != nil {
		return nil, err
	}
	now := a.now()
	evs, err := a.store.RevokeIdentity(ctx, name, reason, now, store.Event{Time: now, Actor: p.Name, Source: addrString(source),
		Action: store.ActionCertRevoked, Identity: name, Outcome: "ok", Detail: fmt.Sprintf("reason %d, all certificates of the identity", reason)})
	if err != nil {
		return nil, newError(KindInternal, err, "could not revoke: %v", err)
	}
	if len(evs) > 0 {
		a.onRevoke()
		if a.observer != nil {
			a.observer.ObserveRevocations(reason, len(evs))
		}
	}
	out := make([]store.Certificate, 0, len(evs))
	for _, ev := range evs {
		rec, err := a.store.Certificate(ctx, ev.Serial)
		if err != nil {
			return nil, newError(KindInternal, err, "revoked, but could not read certificate %s back: %v", ev.Serial, err)
		}
		out = append(out, rec)
	}
	a.log.Info("certificates revoked by identity", "identity", name, "count", len(out))
	return out, nil
}

// Deny puts an identity on the deny list (admins only): from then on no
// door issues or renews it. Its live certificates stay valid until revoked
// (RevokeIdentity), so an operator can choose to stop renewals only.
func (a *Authority) Deny(ctx context.Context, p Principal, id, detail string, source netip.Addr) (store.Denial, error) {
	return a.denyOrAllow(ctx, p, id, detail, source, false)
}

// Allow takes an identity off the deny list (admins only).
func (a *Authority) Allow(ctx context.Context, p Principal, id, detail string, source netip.Addr) (store.Denial, error) {
	return a.denyOrAllow(ctx, p, id, detail, source, true)
}

func (a *Authority) denyOrAllow(ctx context.Context, p Principal, id, detail string, source netip.Addr, allow bool) (store.Denial, error) {
	action, write := store.ActionIdentityDenied, a.store.Deny
	if allow {
		action, write = store.ActionIdentityAllowed, a.store.Allow
	}
	// One name, of the kind its text says: the deny list is per name, so
	// "a,b" would silently deny only one of them.
	n, err := identity.ParseName(strings.TrimSpace(id))
	if err := a.Authorize(p, ActIdentityDeny, Resource{Identity: n.String()}); err != nil {
		return store.Denial{}, err
	}
	if err != nil {
		return store.Denial{}, newError(KindInvalid, err, "%v: name one SPIFFE ID, DNS name or IP address", err)
	}
	if len(detail) > 1024 {
		return store.Denial{}, newError(KindInvalid, nil, "the reason is %d bytes; keep it under 1024", len(detail))
	}
	name := n.String()
	if err := a.gate(ctx, p, ActIdentityDeny, Resource{Identity: name}, denyParams{Identity: name, Allow: allow, Detail: detail}, detail); err != nil {
		return store.Denial{}, err
	}
	ev := store.Event{Time: a.now(), Actor: p.Name, Source: addrString(source), Action: action, Identity: name, Outcome: "ok", Detail: detail}
	err = write(ctx, name, &ev)
	switch {
	case errors.Is(err, store.ErrAlreadyDenied):
		return store.Denial{}, newError(KindConflict, err, "identity %s is already denied", name)
	case errors.Is(err, store.ErrNotFound):
		return store.Denial{}, newError(KindNotFound, err, "identity %s is not denied", name)
	case err != nil:
		return store.Denial{}, newError(KindInternal, err, "could not change the deny list: %v", err)
	}
	a.onRevoke()
	return store.Denial{Identity: name, Time: ev.Time, Actor: ev.Actor, Detail: detail, EventSeq: ev.Seq}, nil
}

// DeniedIdentities reads the deny list (auditors and up).
func (a *Authority) DeniedIdentities(ctx context.Context, p Principal) ([]store.Denial, error) {
	if err := a.Authorize(p, ActDenyListRead, Resource{}); err != nil {
		return nil, err
	}
	list, err := a.store.DeniedIdentities(ctx)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read the deny list: %v", err)
	}
	return list, nil
}

// Revoke marks a certificate revoked. Admins may revoke any certificate; a
// holder may revoke its own.
func (a *Authority) Revoke(ctx context.Context, p Principal, serial string, reason int, source netip.Addr) (store.Certificate, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return store.Certificate{}, err
	}
	if err := checkReason(reason); err != nil {
		return store.Certificate{}, err
	}
	rec, _ := a.store.Certificate(ctx, serial) // not found: revoke says so, once authorized
	res := revokeResource(serial, rec)
	if err := a.Authorize(p, ActCertRevoke, res); err != nil {
		return store.Certificate{}, err
	}
	if err := a.gate(ctx, p, ActCertRevoke, res, revokeParams{Serial: serial, Reason: reason}, ""); err != nil {
		return store.Certificate{}, err
	}
	return a.revoke(ctx, p.Name, serial, reason, source)
}

// revoke is the shared tail of every authorized revocation of one
// certificate (REST, ACME): record the status and its event in one
// transaction, then poke the revocation outputs.
func (a *Authority) revoke(ctx context.Context, actor, serial string, reason int, source netip.Addr) (store.Certificate, error) {
	if err := checkReason(reason); err != nil {
		return store.Certificate{}, err
	}
	now := a.now()
	ev := store.Event{Time: now, Actor: actor, Source: addrString(source), Action: store.ActionCertRevoked,
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

// revokeResource is what revoking the certificate serial (its record rec,
// zero when unknown) is about.
func revokeResource(serial string, rec store.Certificate) Resource {
	return Resource{Serial: serial, Profile: rec.Profile, Identity: rec.Identity, Owner: rec.Owner, Requester: rec.Requester}
}

// MayRevoke answers the question Revoke asks first, for a door that offers
// the action only to whom it would allow (the console's revoke button): nil
// when p may revoke rec, whether or not approvals then hold it.
func (a *Authority) MayRevoke(p Principal, rec store.Certificate) error {
	return a.Authorize(p, ActCertRevoke, revokeResource(rec.Serial, rec))
}
