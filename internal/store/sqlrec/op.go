package sqlrec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
)

// Kind says which write an Op is.
type Kind int

const (
	KindIssuance Kind = iota + 1
	KindEvent
	KindRevoke
	KindRevokeIdentity
	KindDeny
	KindAllow
)

// Op is one queued write, already encoded into column values so that the
// committer never touches memory the caller still owns.
type Op struct {
	Kind  Kind
	Cert  CertRow   // KindIssuance
	Event EventRow  // every kind
	Token *TokenRow // KindIssuance, optional

	// KindRevoke.
	Serial    string
	Reason    int
	RevokedAt int64

	// KindRevokeIdentity, KindDeny, KindAllow.
	Identity string

	// Seq and LeafIndex are the results: the sequence number and the
	// audit log position assigned to Event.
	Seq       int64
	LeafIndex int64
	// Revoked is the result of KindRevokeIdentity: one per certificate.
	Revoked []RevokedRow
}

// RevokedRow is one certificate revoked by KindRevokeIdentity and the
// sequence number and leaf index of its event.
type RevokedRow struct {
	Serial, Fingerprint, Profile string
	Seq, LeafIndex               int64
	LeafHash                     []byte
}

// CertRow is a certificates row.
type CertRow struct {
	Serial, Fingerprint, Identity, SANs, Profile, Requester, SourceAddr string
	NotBefore, NotAfter                                                 int64
	Issuer, Status                                                      string
	RevokedAt                                                           *int64 // NULL unless revoked
	Reason                                                              int
	RenewedFrom                                                         string
	DER                                                                 []byte
	Owner                                                               string
}

// EventRow is an events row without its sequence number and leaf index.
type EventRow struct {
	At                                                                             int64
	Actor, Source, Action, Serial, Fingerprint, Identity, Profile, Outcome, Detail string
	// LeafHash is the audit leaf hash, computed here in the caller's
	// goroutine so that the committer only writes it.
	LeafHash []byte
}

// TokenRow is a used_tokens row.
type TokenRow struct {
	JTI       string
	ExpiresAt int64
	UsedAt    int64
}

// Micros encodes t as unix microseconds; stored times are UTC to the microsecond.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// FromMicros decodes Micros.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// IssuanceOp validates iss and encodes it. Validation happens in the
// caller's goroutine so a malformed request fails alone instead of failing
// the shared transaction.
func IssuanceOp(iss *store.Issuance) (Op, error) {
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
	sans := c.SANs
	if sans == nil {
		sans = []string{}
	}
	sansJSON, err := json.Marshal(sans)
	if err != nil {
		return Op{}, fmt.Errorf("encode SANs: %w", err)
	}
	op := Op{
		Kind: KindIssuance,
		Cert: CertRow{
			Serial: c.Serial, Fingerprint: c.Fingerprint, Identity: c.Identity,
			SANs: string(sansJSON), Profile: c.Profile, Requester: c.Requester,
			SourceAddr: c.SourceAddr, NotBefore: Micros(c.NotBefore), NotAfter: Micros(c.NotAfter),
			Issuer: c.Issuer, Status: string(store.StatusActive), Reason: 0,
			RenewedFrom: c.RenewedFrom, DER: bytes.Clone(c.DER), Owner: c.Owner,
		},
		Event: ev,
	}
	if iss.Token != nil {
		op.Token = &TokenRow{JTI: iss.Token.JTI, ExpiresAt: Micros(iss.Token.ExpiresAt), UsedAt: ev.At}
	}
	return op, nil
}

// EventOp validates ev and encodes it.
func EventOp(ev *store.Event) (Op, error) {
	if ev == nil {
		return Op{}, errors.New("event is nil")
	}
	row, err := eventRow(ev)
	if err != nil {
		return Op{}, err
	}
	return Op{Kind: KindEvent, Event: row}, nil
}

// RevokeOp validates a revocation and encodes it.
func RevokeOp(serial string, reason int, at time.Time, ev *store.Event) (Op, error) {
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
	return Op{Kind: KindRevoke, Event: row, Serial: serial, Reason: reason, RevokedAt: Micros(at)}, nil
}

// Rehash sets LeafHash from the row's columns, for an event the committer
// derives inside the transaction (one per certificate of a revoked identity).
func (e *EventRow) Rehash() {
	e.LeafHash = leaf.Hash(&store.Event{
		Time: FromMicros(e.At), Actor: e.Actor, Source: e.Source, Action: store.Action(e.Action),
		Serial: e.Serial, Fingerprint: e.Fingerprint, Identity: e.Identity, Profile: e.Profile,
		Outcome: e.Outcome, Detail: e.Detail,
	})
}

func eventRow(ev *store.Event) (EventRow, error) {
	switch {
	case ev.Action == "":
		return EventRow{}, errors.New("invalid event: Action is empty")
	case ev.Time.IsZero():
		return EventRow{}, errors.New("invalid event: Time is zero; set it from the authority's clock")
	}
	return EventRow{
		At: Micros(ev.Time), Actor: ev.Actor, Source: ev.Source, Action: string(ev.Action),
		Serial: ev.Serial, Fingerprint: ev.Fingerprint, Identity: ev.Identity,
		Profile: ev.Profile, Outcome: ev.Outcome, Detail: ev.Detail,
		LeafHash: leaf.Hash(ev),
	}, nil
}

// RevokeIdentityOp validates a revocation of every live certificate of an
// identity and encodes it.
func RevokeIdentityOp(identity string, reason int, at time.Time, ev *store.Event) (Op, error) {
	if identity == "" {
		return Op{}, errors.New("invalid revocation: identity is empty")
	}
	op, err := RevokeOp("-", reason, at, ev)
	if err != nil {
		return Op{}, err
	}
	op.Kind, op.Serial, op.Identity = KindRevokeIdentity, "", identity
	return op, nil
}

// DenyOp encodes putting identity on the deny list (allow false) or taking
// it off (allow true).
func DenyOp(identity string, allow bool, ev *store.Event) (Op, error) {
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

// RevocationKind reports whether k changes what the revocation outputs
// (CRL, OCSP, feed) publish.
func RevocationKind(k Kind) bool {
	return k == KindRevoke || k == KindRevokeIdentity || k == KindDeny || k == KindAllow
}

// RevokedEvents turns the result of a KindRevokeIdentity op into the
// events it recorded, ev filled in per certificate.
func RevokedEvents(ev store.Event, rows []RevokedRow) []store.Event {
	out := make([]store.Event, 0, len(rows))
	for _, r := range rows {
		e := ev
		e.Serial, e.Fingerprint, e.Profile, e.Seq = r.Serial, r.Fingerprint, r.Profile, r.Seq
		e.LeafIndex, e.LeafHash = r.LeafIndex, r.LeafHash
		out = append(out, e)
	}
	return out
}
