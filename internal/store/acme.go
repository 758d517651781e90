package store

import (
	"context"
	"errors"
	"time"
)

// ACMEKind names one kind of ACME object the ACME front door keeps. Each
// kind has its own table; the values are stable because they name tables.
type ACMEKind string

const (
	ACMEAccount       ACMEKind = "account"
	ACMEOrder         ACMEKind = "order"
	ACMEAuthorization ACMEKind = "authorization"
	ACMEChallenge     ACMEKind = "challenge"
)

// ACMERecord is one ACME object. The store knows only the columns the front
// door queries by; the object itself is Data, opaque JSON owned by the ACME
// package, so the protocol can grow without schema changes.
type ACMERecord struct {
	Kind ACMEKind
	ID   string
	// Parent is the owning object: the account of an order or an
	// authorization, the authorization of a challenge; empty for accounts.
	Parent string
	// Lookup is a second unique key within the kind (an account's key
	// thumbprint); empty when the kind has none.
	Lookup  string
	Status  string
	Expires time.Time // zero for never
	Data    []byte
}

// ErrConflict is returned when a write would break a uniqueness or
// compare-and-swap condition: the record changed or exists already.
var ErrConflict = errors.New("store: conflict")

// ACMEStore is what the ACME front door keeps between requests. Both
// engines implement it next to Store; it is a separate interface because
// only the ACME door needs it.
type ACMEStore interface {
	// CreateACME inserts recs in one transaction: all or none. ErrConflict
	// if an ID, or a non-empty Lookup within a kind, exists already.
	CreateACME(ctx context.Context, recs ...ACMERecord) error
	// UpdateACME replaces the record with rec.Kind and rec.ID if its status
	// is still fromStatus and its lookup key still fromLookup
	// (compare-and-swap, so two replicas cannot both move an order from
	// ready to processing, and an account update signed with the old key
	// cannot undo a key change that committed meanwhile). ErrNotFound,
	// ErrConflict.
	UpdateACME(ctx context.Context, rec ACMERecord, fromStatus, fromLookup string) error
	// ACMEByID reads one record. ErrNotFound.
	ACMEByID(ctx context.Context, kind ACMEKind, id string) (ACMERecord, error)
	// ACMEByLookup reads the record with a Lookup key. ErrNotFound.
	ACMEByLookup(ctx context.Context, kind ACMEKind, lookup string) (ACMERecord, error)
	// ACMEChildren lists the records of kind whose Parent is parent, oldest
	// first, at most limit (0 means 1000).
	ACMEChildren(ctx context.Context, kind ACMEKind, parent string, limit int) ([]ACMERecord, error)
	// ACMEByStatus lists the records of kind in status, oldest first, at
	// most limit (0 means 1000): the orders a crash left processing. Only
	// orders are indexed by status.
	ACMEByStatus(ctx context.Context, kind ACMEKind, status string, limit int) ([]ACMERecord, error)
	// UseACMENonce records that nonce was used, until expires: it succeeds
	// once per nonce and returns ErrConflict when the nonce was used
	// before (a replay), on whichever server. Nonces are issued without
	// the store (see ACMENonceKey); only used ones are kept, and records
	// expired at now are swept now and then.
	UseACMENonce(ctx context.Context, nonce string, expires, now time.Time) error
	// ACMENonceKey returns the key that nonces of epoch are made with. The
	// first caller for an epoch stores fresh and every later caller, on
	// every server, gets that same key; storing a new epoch's key forgets
	// the keys of epochs before epoch-2 (a nonce outlives its epoch by at
	// most one more, and servers' clocks differ a little).
	ACMENonceKey(ctx context.Context, epoch int64, fresh []byte) ([]byte, error)
}

// ACMETable is the table that holds records of kind k, or "" for an
// unknown kind. Engines build SQL only from these fixed names.
func ACMETable(k ACMEKind) string {
	switch k {
	case ACMEAccount:
		return "acme_accounts"
	case ACMEOrder:
		return "acme_orders"
	case ACMEAuthorization:
		return "acme_authorizations"
	case ACMEChallenge:
		return "acme_challenges"
	}
	return ""
}
