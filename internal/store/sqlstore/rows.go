package sqlstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
)

// This file maps records to rows and back: the column lists, their
// encodings (times as unix microseconds, SANs as a JSON array) and the
// scanning of rows. A new column of a record is added here, in the
// record type (package store) and in a migration pair; the statements
// of this package and of the engines are built from these lists.

// Column is one column the store writes, with its SQL type as the
// migrations spell it on PostgreSQL, which needs it to type parameters
// inside INSERT … SELECT (SQLite needs no types).
type Column struct {
	Name, Type string
}

// certColumns are the certificates columns in the order of CertRow.Args,
// followed by event_seq, which the batch that records the certificate
// assigns.
var certColumns = []Column{
	{"serial", "text"}, {"fingerprint", "text"}, {"identity", "text"}, {"sans", "text"},
	{"profile", "text"}, {"requester", "text"}, {"source_addr", "text"},
	{"not_before", "bigint"}, {"not_after", "bigint"}, {"issuer", "text"}, {"status", "text"},
	{"revoked_at", "bigint"}, {"revocation_reason", "integer"}, {"renewed_from", "text"},
	{"der", "bytea"}, {"owner", "text"}, {"chain_started_at", "bigint"}, {"token_jti", "text"},
	{"event_seq", "bigint"},
}

// CertColumns are the certificates columns a batch writes: CertRow.Args
// in order, then event_seq.
func CertColumns() []Column { return certColumns }

// CertRow is a certificates row without its event_seq.
type CertRow struct {
	Serial, Fingerprint, Identity, SANs, Profile, Requester, SourceAddr string
	NotBefore, NotAfter                                                 int64
	Issuer, Status                                                      string
	RevokedAt                                                           *int64 // NULL unless revoked
	Reason                                                              int
	RenewedFrom                                                         string
	DER                                                                 []byte
	Owner                                                               string
	ChainStartedAt                                                      int64
	TokenJTI                                                            string
}

// Args are r's values in the order of CertColumns, without event_seq.
func (r *CertRow) Args() []any {
	return []any{r.Serial, r.Fingerprint, r.Identity, r.SANs, r.Profile, r.Requester, r.SourceAddr,
		r.NotBefore, r.NotAfter, r.Issuer, r.Status, r.RevokedAt, r.Reason, r.RenewedFrom, r.DER, r.Owner,
		r.ChainStartedAt, r.TokenJTI}
}

// certRow encodes c as a new certificate: active, not revoked.
func certRow(c *store.Certificate) (CertRow, error) {
	sans := c.SANs
	if sans == nil {
		sans = []string{}
	}
	sansJSON, err := json.Marshal(sans)
	if err != nil {
		return CertRow{}, fmt.Errorf("encode SANs: %w", err)
	}
	return CertRow{
		Serial: c.Serial, Fingerprint: c.Fingerprint, Identity: c.Identity,
		SANs: string(sansJSON), Profile: c.Profile, Requester: c.Requester,
		SourceAddr: c.SourceAddr, NotBefore: micros(c.NotBefore), NotAfter: micros(c.NotAfter),
		Issuer: c.Issuer, Status: string(store.StatusActive), Reason: 0,
		RenewedFrom: c.RenewedFrom, DER: bytes.Clone(c.DER), Owner: c.Owner,
		ChainStartedAt: micros(c.ChainStartedAt), TokenJTI: c.TokenJTI,
	}, nil
}

// scanCertificate reads one row selected with certSelect.
func scanCertificate(scan scanFunc) (store.Certificate, error) {
	var (
		c                   store.Certificate
		sans, status        string
		notBefore, notAfter int64
		revokedAt           *int64
		reason              int64
		chainStarted        int64
	)
	err := scan(&c.Serial, &c.Fingerprint, &c.Identity, &sans, &c.Profile, &c.Requester,
		&c.SourceAddr, &notBefore, &notAfter, &c.Issuer, &status, &revokedAt, &reason,
		&c.RenewedFrom, &c.DER, &c.Owner, &chainStarted, &c.TokenJTI, &c.EventSeq)
	if err != nil {
		return store.Certificate{}, err
	}
	if err := json.Unmarshal([]byte(sans), &c.SANs); err != nil {
		return store.Certificate{}, fmt.Errorf("decode SANs of certificate %s: %w", c.Serial, err)
	}
	if len(c.SANs) == 0 {
		c.SANs = nil
	}
	c.NotBefore, c.NotAfter = fromMicros(notBefore), fromMicros(notAfter)
	c.ChainStartedAt = fromMicros(chainStarted)
	c.Status = store.Status(status)
	if revokedAt != nil {
		c.RevokedAt = fromMicros(*revokedAt)
	}
	c.RevocationReason = int(reason)
	return c, nil
}

// certSelect is the select list scanCertificate reads, each column
// prefixed with prefix (a table alias and a dot, or ""). withoutDER reads
// NULL instead of the DER, which reads back as an empty DER, for lists
// that do not need it.
func certSelect(prefix string, withoutDER bool) string {
	names := make([]string, len(certColumns))
	for i, c := range certColumns {
		names[i] = prefix + c.Name
		if withoutDER && c.Name == "der" {
			names[i] = "NULL"
		}
	}
	return strings.Join(names, ", ")
}

// eventColumns are the events columns in the order of EventRow.Args; a
// recorded event also has leaf_index and leaf_hash, and its seq is the
// database's.
var eventColumns = []Column{
	{"at", "bigint"}, {"actor", "text"}, {"source", "text"}, {"action", "text"},
	{"serial", "text"}, {"fingerprint", "text"}, {"identity", "text"}, {"profile", "text"},
	{"outcome", "text"}, {"detail", "text"},
}

// EventColumns are the events columns a batch writes, in the order of
// EventRow.Args; leaf_index and leaf_hash come after them.
func EventColumns() []Column { return eventColumns }

// EventRow is an events row without its sequence number and leaf index.
type EventRow struct {
	At                                                                             int64
	Actor, Source, Action, Serial, Fingerprint, Identity, Profile, Outcome, Detail string
	// LeafHash is the audit leaf hash, computed here in the caller's
	// goroutine so that the committer only writes it.
	LeafHash []byte
}

// Args are e's values in the order of EventColumns.
func (e *EventRow) Args() []any {
	return []any{e.At, e.Actor, e.Source, e.Action, e.Serial, e.Fingerprint, e.Identity, e.Profile, e.Outcome, e.Detail}
}

// ForCertificate is e as the event of one certificate that an identity
// revocation revoked, with its own leaf hash.
func (e EventRow) ForCertificate(serial, fingerprint, profile string) EventRow {
	e.Serial, e.Fingerprint, e.Profile = serial, fingerprint, profile
	e.LeafHash = leaf.Hash(&store.Event{
		Time: fromMicros(e.At), Actor: e.Actor, Source: e.Source, Action: store.Action(e.Action),
		Serial: e.Serial, Fingerprint: e.Fingerprint, Identity: e.Identity, Profile: e.Profile,
		Outcome: e.Outcome, Detail: e.Detail,
	})
	return e
}

func eventRow(ev *store.Event) (EventRow, error) {
	switch {
	case ev.Action == "":
		return EventRow{}, fmt.Errorf("invalid event: Action is empty")
	case ev.Time.IsZero():
		return EventRow{}, fmt.Errorf("invalid event: Time is zero; set it from the authority's clock")
	}
	return EventRow{
		At: micros(ev.Time), Actor: ev.Actor, Source: ev.Source, Action: string(ev.Action),
		Serial: ev.Serial, Fingerprint: ev.Fingerprint, Identity: ev.Identity,
		Profile: ev.Profile, Outcome: ev.Outcome, Detail: ev.Detail,
		LeafHash: leaf.Hash(ev),
	}, nil
}

// eventSelect is the select list scanEvent reads.
var eventSelect = "seq, " + Names(eventColumns) + ", leaf_index, leaf_hash"

// scanEvent reads one row selected with eventSelect.
func scanEvent(scan scanFunc) (store.Event, error) {
	var (
		ev        store.Event
		at        int64
		action    string
		leafIndex *int64
	)
	err := scan(&ev.Seq, &at, &ev.Actor, &ev.Source, &action, &ev.Serial, &ev.Fingerprint,
		&ev.Identity, &ev.Profile, &ev.Outcome, &ev.Detail, &leafIndex, &ev.LeafHash)
	if err != nil {
		return store.Event{}, err
	}
	// Events recorded before the audit log existed have no leaf until the
	// engine backfills them at open.
	ev.LeafIndex = -1
	if leafIndex != nil {
		ev.LeafIndex = *leafIndex
	}
	ev.Time, ev.Action = fromMicros(at), store.Action(action)
	return ev, nil
}

// TokenRow is a used_tokens row.
type TokenRow struct {
	JTI       string
	ExpiresAt int64
	UsedAt    int64
}

// checkpointSelect is the select list scanCheckpoint reads, and the
// columns addCheckpoint writes.
const checkpointSelect = "size, root, note, at"

func scanCheckpoint(scan scanFunc) (store.Checkpoint, error) {
	var (
		c  store.Checkpoint
		at int64
	)
	if err := scan(&c.Size, &c.Root, &c.Note, &at); err != nil {
		return store.Checkpoint{}, err
	}
	c.Time = fromMicros(at)
	return c, nil
}

// revokedSelect is the select list scanRevoked reads.
const revokedSelect = "serial, identity, issuer, revoked_at, revocation_reason, not_after"

func scanRevoked(scan scanFunc) (store.Revoked, error) {
	var r store.Revoked
	var at, na int64
	var reason int64
	if err := scan(&r.Serial, &r.Identity, &r.Issuer, &at, &reason, &na); err != nil {
		return r, err
	}
	r.RevokedAt, r.NotAfter, r.Reason = fromMicros(at), fromMicros(na), int(reason)
	return r, nil
}

// denialSelect is the select list scanDenial reads.
const denialSelect = "identity, at, actor, detail, event_seq"

func scanDenial(scan scanFunc) (store.Denial, error) {
	var d store.Denial
	var at int64
	if err := scan(&d.Identity, &at, &d.Actor, &d.Detail, &d.EventSeq); err != nil {
		return d, err
	}
	d.Time = fromMicros(at)
	return d, nil
}

// acmeSelect is the select list scanACME reads, and the columns
// CreateACME writes, of every ACME kind's table.
const acmeSelect = "id, parent, lookup, status, expires, data"

func scanACME(kind store.ACMEKind, scan scanFunc) (store.ACMERecord, error) {
	r := store.ACMERecord{Kind: kind}
	var exp int64
	if err := scan(&r.ID, &r.Parent, &r.Lookup, &r.Status, &exp, &r.Data); err != nil {
		return store.ACMERecord{}, err
	}
	if exp != 0 {
		r.Expires = fromMicros(exp)
	}
	return r, nil
}

// expiresMicros encodes an ACME expiry; zero, for never, stays 0.
func expiresMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return micros(t)
}

// scanOne reads a row of one column.
func scanOne[T any](scan scanFunc) (T, error) {
	var v T
	err := scan(&v)
	return v, err
}

// micros encodes t as unix microseconds; stored times are UTC to the
// microsecond.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros decodes micros.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Names joins the columns' names, for a column list.
func Names(cols []Column) string {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = c.Name
	}
	return strings.Join(s, ", ")
}
