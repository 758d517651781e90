package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

var _ store.ACMEStore = (*Store)(nil)

// ACME state is small and written once or twice per request, so it goes
// straight to the database rather than through the group committer, whose
// batches are shaped for certificates and events. Reads see every
// committed write, and these writes commit before they return.

func (s *Store) acmeStatements(k store.ACMEKind) (acmeStatements, error) {
	st, ok := s.stmt.acme[k]
	if !ok {
		return st, s.errorf("unknown ACME record kind %q", k)
	}
	return st, nil
}

// CreateACME implements store.ACMEStore.
func (s *Store) CreateACME(ctx context.Context, recs ...store.ACMERecord) (err error) {
	ctx, end := s.call(ctx, "create ACME records", true)
	defer end(&err)
	return inTx(ctx, s.write, &s.d, "create ACME records", func(tx Conn) error {
		for _, r := range recs {
			st, err := s.acmeStatements(r.Kind)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, st.insert, r.ID, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data)
			switch {
			case s.d.IsUniqueViolation(err):
				return s.errorf("ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
			case err != nil:
				return s.errorf("create ACME %s %s: %w", r.Kind, r.ID, err)
			}
		}
		return nil
	})
}

// UpdateACME implements store.ACMEStore. The update is one statement that
// changes the record only while its status is fromStatus; when it changed
// nothing, the status read afterwards says why.
func (s *Store) UpdateACME(ctx context.Context, r store.ACMERecord, fromStatus string) (err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("update ACME %s %s", r.Kind, r.ID), true)
	defer end(&err)
	st, err := s.acmeStatements(r.Kind)
	if err != nil {
		return err
	}
	n, err := s.write.Exec(ctx, st.update, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data, r.ID, fromStatus)
	switch {
	case s.d.IsUniqueViolation(err):
		return s.errorf("ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
	case err != nil:
		return s.errorf("update ACME %s %s: %w", r.Kind, r.ID, err)
	case n == 1:
		return nil
	}
	var status string
	err = s.write.QueryRow(ctx, st.status, r.ID).Scan(&status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return s.errorf("ACME %s %s: %w", r.Kind, r.ID, store.ErrNotFound)
	case err != nil:
		return s.errorf("update ACME %s %s: %w", r.Kind, r.ID, err)
	}
	return s.errorf("ACME %s %s is %s, not %s: %w", r.Kind, r.ID, status, fromStatus, store.ErrConflict)
}

// ACMEByID implements store.ACMEStore.
func (s *Store) ACMEByID(ctx context.Context, kind store.ACMEKind, id string) (_ store.ACMERecord, err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("read ACME %s %s", kind, id), false)
	defer end(&err)
	st, err := s.acmeStatements(kind)
	if err != nil {
		return store.ACMERecord{}, err
	}
	return s.oneACME(ctx, kind, st.byID, "id", id)
}

// ACMEByLookup implements store.ACMEStore.
func (s *Store) ACMEByLookup(ctx context.Context, kind store.ACMEKind, lookup string) (_ store.ACMERecord, err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("read ACME %s by lookup key", kind), false)
	defer end(&err)
	st, err := s.acmeStatements(kind)
	if err != nil {
		return store.ACMERecord{}, err
	}
	if lookup == "" {
		return store.ACMERecord{}, s.errorf("ACME %s with an empty lookup key: %w", kind, store.ErrNotFound)
	}
	return s.oneACME(ctx, kind, st.byLookup, "lookup", lookup)
}

func (s *Store) oneACME(ctx context.Context, kind store.ACMEKind, query, col, val string) (store.ACMERecord, error) {
	r, err := scanACME(kind, s.read.QueryRow(ctx, query, val).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return r, s.errorf("ACME %s with %s %s: %w", kind, col, val, store.ErrNotFound)
	case err != nil:
		return r, s.errorf("read ACME %s: %w", kind, err)
	}
	return r, nil
}

// ACMEChildren implements store.ACMEStore.
func (s *Store) ACMEChildren(ctx context.Context, kind store.ACMEKind, parent string, limit int) (_ []store.ACMERecord, err error) {
	ctx, end := s.call(ctx, "list ACME "+string(kind), false)
	defer end(&err)
	st, err := s.acmeStatements(kind)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	scan := func(scan scanFunc) (store.ACMERecord, error) { return scanACME(kind, scan) }
	return list(ctx, s, "list ACME "+string(kind), scan, query{SQL: st.children, Args: []any{parent, limit}}, nil)
}

// AddACMENonce implements store.ACMEStore. Expired nonces are swept now
// and then on the way, so the table stays the size of the nonces in flight.
func (s *Store) AddACMENonce(ctx context.Context, nonce string, expires time.Time) (err error) {
	ctx, end := s.call(ctx, "add ACME nonce", true)
	defer end(&err)
	if _, err := s.write.Exec(ctx, s.stmt.addNonce, nonce, micros(expires)); err != nil {
		return s.errorf("add ACME nonce: %w", err)
	}
	if nonce[len(nonce)-1]%64 == 0 {
		// Best effort: a sweep that fails is retried by a later nonce.
		s.write.Exec(ctx, s.stmt.sweepNonces, micros(time.Now()))
	}
	return nil
}

// UseACMENonce implements store.ACMEStore.
func (s *Store) UseACMENonce(ctx context.Context, nonce string, now time.Time) (err error) {
	ctx, end := s.call(ctx, "use ACME nonce", true)
	defer end(&err)
	n, err := s.write.Exec(ctx, s.stmt.useNonce, nonce, micros(now))
	if err != nil {
		return s.errorf("use ACME nonce: %w", err)
	}
	if n != 1 {
		return s.errorf("ACME nonce: %w", store.ErrNotFound)
	}
	return nil
}
