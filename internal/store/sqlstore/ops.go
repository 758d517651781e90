package sqlstore

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// This file is the front of the group-committed writes: each write of
// store.Store becomes an Op, validated and encoded in the caller's
// goroutine so that a malformed request fails alone instead of failing
// the shared transaction, and so that the committer never touches memory
// the caller still owns. The engine's commit writes a batch of them.

// Kind says which write an Op is.
type Kind int

const (
	KindIssuance Kind = iota + 1
	KindEvent
	KindRevoke
	KindRevokeIdentity
	KindDeny
	KindAllow
	// KindGuarded is a conditional state change and its event: Guards
	// run in order and the event is written only if every one changed
	// the number of rows it expects; otherwise nothing of the item is
	// written and it fails alone with store.ErrConflict. Rare, human-speed
	// writes (approvals, grants, policy versions) use it, so that a state
	// change and its audit leaf commit together without each needing its
	// own statement in every engine.
	KindGuarded
)

// Guard is one statement of a KindGuarded op, in the dialect's
// placeholder style.
type Guard struct {
	SQL  string
	Args []any
	// Want is the number of rows the statement must change; negative
	// accepts any number.
	Want int64
}

// Op is one queued write, already encoded into column values.
type Op struct {
	Kind  Kind
	Cert  CertRow   // KindIssuance
	Event EventRow  // every kind
	Token *TokenRow // KindIssuance, optional
	// KindIssuance: the identity's names, none of which may be denied at
	// commit, and the serial renewed, which must still be active.
	Names  []string
	Renews string
	// Denied is set by the engine that refused an issuance with
	// RefusedDenied: the name it found on the deny list.
	Denied string

	// KindRevoke.
	Serial    string
	Reason    int
	RevokedAt int64

	// KindRevokeIdentity, KindDeny, KindAllow.
	Identity string

	// KindGuarded: the statements, and what they do, for the conflict's
	// message ("approve request 3f2a").
	Guards []Guard
	What   string

	// Seq and LeafIndex are the results: the sequence number and the
	// audit log position assigned to Event.
	Seq       int64
	LeafIndex int64
	// Revoked is the result of KindRevokeIdentity: one per certificate.
	Revoked []RevokedRow
}

// RevokedRow is one certificate revoked by KindRevokeIdentity and the
// sequence number, leaf index and leaf hash of its event.
type RevokedRow struct {
	Serial, Fingerprint, Profile string
	Seq, LeafIndex               int64
	LeafHash                     []byte
}

// RevocationKind reports whether k changes what the revocation outputs
// (CRL, OCSP, feed) publish.
func RevocationKind(k Kind) bool {
	return k == KindRevoke || k == KindRevokeIdentity || k == KindDeny || k == KindAllow
}

func issuanceOp(iss *store.Issuance) (Op, error) {
	if iss == nil {
		return Op{}, errors.New("issuance is nil")
	}
	c := &iss.Certificate
	switch {
	case c.Serial == "":
		return Op{}, errors.New("invalid issuance: Certificate.Serial is empty; set it to the lower-case hex serial")
	case c.Fingerprint == "":
		return Op{}, errors.New("invalid issuance: Certificate.Fingerprint is empty; set it to the hex SHA-256 of the DER")
	case len(c.DER) == 0:
		return Op{}, errors.New("invalid issuance: Certificate.DER is empty; record the signed certificate")
	case c.NotBefore.IsZero() || c.NotAfter.IsZero():
		return Op{}, errors.New("invalid issuance: Certificate.NotBefore and NotAfter must both be set")
	case c.Status != "" && c.Status != store.StatusActive:
		return Op{}, fmt.Errorf("invalid issuance: Certificate.Status is %q; a new certificate is recorded active and revoked with Revoke", c.Status)
	}
	if iss.Token != nil && iss.Token.JTI == "" {
		return Op{}, errors.New("invalid issuance: Token.JTI is empty; set it or leave Token nil")
	}
	ev, err := eventRow(&iss.Event)
	if err != nil {
		return Op{}, err
	}
	cert, err := certRow(c)
	if err != nil {
		return Op{}, err
	}
	op := Op{Kind: KindIssuance, Cert: cert, Event: ev, Names: slices.Clone(iss.Names), Renews: iss.Renews}
	if iss.Token != nil {
		op.Token = &TokenRow{JTI: iss.Token.JTI, ExpiresAt: micros(iss.Token.ExpiresAt), UsedAt: ev.At}
	}
	return op, nil
}

func eventOp(ev *store.Event) (Op, error) {
	if ev == nil {
		return Op{}, errors.New("event is nil")
	}
	row, err := eventRow(ev)
	if err != nil {
		return Op{}, err
	}
	return Op{Kind: KindEvent, Event: row}, nil
}

func revokeOp(serial string, reason int, at time.Time, ev *store.Event) (Op, error) {
	switch {
	case serial == "":
		return Op{}, errors.New("invalid revocation: serial is empty")
	case at.IsZero():
		return Op{}, errors.New("invalid revocation: revocation time is zero")
	case reason < 0 || reason > 10 || reason == 7:
		return Op{}, fmt.Errorf("invalid revocation: reason %d is not an RFC 5280 CRLReason code", reason)
	case ev == nil:
		return Op{}, errors.New("invalid revocation: event is nil; every revocation is audited")
	}
	row, err := eventRow(ev)
	if err != nil {
		return Op{}, err
	}
	return Op{Kind: KindRevoke, Event: row, Serial: serial, Reason: reason, RevokedAt: micros(at)}, nil
}

func revokeIdentityOp(identity string, reason int, at time.Time, ev *store.Event) (Op, error) {
	if identity == "" {
		return Op{}, errors.New("invalid revocation: identity is empty")
	}
	op, err := revokeOp("-", reason, at, ev)
	if err != nil {
		return Op{}, err
	}
	op.Kind, op.Serial, op.Identity = KindRevokeIdentity, "", identity
	return op, nil
}

// denyOp encodes putting identity on the deny list (allow false) or
// taking it off (allow true).
func denyOp(identity string, allow bool, ev *store.Event) (Op, error) {
	if identity == "" {
		return Op{}, errors.New("invalid deny list change: identity is empty")
	}
	if ev == nil {
		return Op{}, errors.New("invalid deny list change: event is nil; every change is audited")
	}
	row, err := eventRow(ev)
	if err != nil {
		return Op{}, err
	}
	k := KindDeny
	if allow {
		k = KindAllow
	}
	return Op{Kind: k, Event: row, Identity: identity}, nil
}

// revokedEvents turns the result of a KindRevokeIdentity op into the
// events it recorded, ev filled in per certificate.
func revokedEvents(ev store.Event, rows []RevokedRow) []store.Event {
	out := make([]store.Event, 0, len(rows))
	for _, r := range rows {
		e := ev
		e.Serial, e.Fingerprint, e.Profile, e.Seq = r.Serial, r.Fingerprint, r.Profile, r.Seq
		e.LeafIndex, e.LeafHash = r.LeafIndex, r.LeafHash
		out = append(out, e)
	}
	return out
}

// Refusal says why one operation of a batch failed on its own, having
// written nothing, while the rest of the batch commits. Engines find it
// their own way (a check before the write, or what a statement returned);
// the error it becomes is the same on every engine.
type Refusal int

const (
	// RefusedTokenUsed: the issuance's token was consumed before.
	RefusedTokenUsed Refusal = iota + 1
	// RefusedCertExists: the issuance's serial or fingerprint is recorded already.
	RefusedCertExists
	// RefusedNotFound: Revoke found no such certificate; Allow found the
	// identity not denied.
	RefusedNotFound
	// RefusedAlreadyRevoked: Revoke found the certificate revoked before.
	RefusedAlreadyRevoked
	// RefusedAlreadyDenied: Deny found the identity denied before.
	RefusedAlreadyDenied
	// RefusedConflict: a guarded write found the state changed.
	RefusedConflict
	// RefusedDenied: a name of the issuance's identity is on the deny
	// list (the engine sets Op.Denied).
	RefusedDenied
	// RefusedRenewedRevoked: the certificate the issuance renews is no
	// longer active.
	RefusedRenewedRevoked
)

// Refuse is the error an operation gets when it fails alone for why; d
// names the engine, as the first word of the message.
func (op *Op) Refuse(d *Dialect, why Refusal) error {
	engine := d.Name
	switch why {
	case RefusedTokenUsed:
		return fmt.Errorf("%s: enrollment token %s: %w", engine, op.Token.JTI, store.ErrTokenUsed)
	case RefusedCertExists:
		return fmt.Errorf("%s: certificate serial %s or fingerprint %s is already recorded: look it up before retrying, or issue with a fresh serial",
			engine, op.Cert.Serial, op.Cert.Fingerprint)
	case RefusedNotFound:
		if op.Kind == KindAllow {
			return fmt.Errorf("%s: allow %s: it is not denied: %w", engine, op.Identity, store.ErrNotFound)
		}
		return fmt.Errorf("%s: revoke certificate %s: %w", engine, op.Serial, store.ErrNotFound)
	case RefusedAlreadyRevoked:
		return fmt.Errorf("%s: revoke certificate %s: %w", engine, op.Serial, store.ErrAlreadyRevoked)
	case RefusedAlreadyDenied:
		return fmt.Errorf("%s: deny %s: %w", engine, op.Identity, store.ErrAlreadyDenied)
	case RefusedConflict:
		return fmt.Errorf("%s: %s: the state changed meanwhile: %w", engine, op.What, store.ErrConflict)
	case RefusedDenied:
		return fmt.Errorf("%s: certificate %s: %w", engine, op.Cert.Serial, &store.DeniedError{Name: op.Denied})
	case RefusedRenewedRevoked:
		return fmt.Errorf("%s: certificate %s renews %s: %w", engine, op.Cert.Serial, op.Renews, store.ErrRenewedRevoked)
	}
	return fmt.Errorf("%s: operation refused for unknown reason %d", engine, why)
}
