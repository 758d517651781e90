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
// changes the record only while its status is fromStatus and its lookup
// fromLookup; when it changed nothing, the row read afterwards says why.
func (s *Store) UpdateACME(ctx context.Context, r store.ACMERecord, fromStatus, fromLookup string) (err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("update ACME %s %s", r.Kind, r.ID), true)
	defer end(&err)
	st, err := s.acmeStatements(r.Kind)
	if err != nil {
		return err
	}
	n, err := s.write.Exec(ctx, st.update, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data, r.ID, fromStatus, fromLookup)
	switch {
	case s.d.IsUniqueViolation(err):
		return s.errorf("ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
	case err != nil:
		return s.errorf("update ACME %s %s: %w", r.Kind, r.ID, err)
	case n == 1:
		return nil
	}
	var status, lookup string
	err = s.write.QueryRow(ctx, st.status, r.ID).Scan(&status, &lookup)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return s.errorf("ACME %s %s: %w", r.Kind, r.ID, store.ErrNotFound)
	case err != nil:
		return s.errorf("update ACME %s %s: %w", r.Kind, r.ID, err)
	}
	if status == fromStatus {
		return s.errorf("ACME %s %s has another lookup key than %q: %w", r.Kind, r.ID, fromLookup, store.ErrConflict)
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

// ACMEByStatus implements store.ACMEStore.
func (s *Store) ACMEByStatus(ctx context.Context, kind store.ACMEKind, status string, limit int) (_ []store.ACMERecord, err error) {
	ctx, end := s.call(ctx, "list ACME "+string(kind)+" by status", false)
	defer end(&err)
	st, err := s.acmeStatements(kind)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	scan := func(scan scanFunc) (store.ACMERecord, error) { return scanACME(kind, scan) }
	return list(ctx, s, "list ACME "+string(kind)+" by status", scan, query{SQL: st.byStatus, Args: []any{status, limit}}, nil)
}

// nonceSweepEvery is how many nonce uses pass between sweeps of the
// expired ones.
const nonceSweepEvery = 64

// UseACMENonce implements store.ACMEStore: the nonce's primary key is the
// replay guard across servers. Expired records are swept every
// nonceSweepEvery uses, so the table stays the size of the nonces used in
// one lifetime.
func (s *Store) UseACMENonce(ctx context.Context, nonce string, expires, now time.Time) (err error) {
	ctx, end := s.call(ctx, "use ACME nonce", true)
	defer end(&err)
	_, err = s.write.Exec(ctx, s.stmt.useNonce, nonce, micros(expires))
	switch {
	case s.d.IsUniqueViolation(err):
		return s.errorf("ACME nonce used before: %w", store.ErrConflict)
	case err != nil:
		return s.errorf("record a used ACME nonce: %w", err)
	}
	if s.nonceUses.Add(1)%nonceSweepEvery == 0 {
		// Best effort: a sweep that fails is retried by a later nonce.
		s.write.Exec(ctx, s.stmt.sweepNonces, micros(now))
	}
	return nil
}

// ACMENonceKey implements store.ACMEStore: insert-if-absent, then read
// back whichever key won, in one transaction.
func (s *Store) ACMENonceKey(ctx context.Context, epoch int64, fresh []byte) (key []byte, err error) {
	ctx, end := s.call(ctx, "ACME nonce key", true)
	defer end(&err)
	err = inTx(ctx, s.write, &s.d, "ACME nonce key", func(tx Conn) error {
		n, err := tx.Exec(ctx, s.stmt.addNonceKey, epoch, fresh)
		if err != nil {
			return s.errorf("store the ACME nonce key of epoch %d: %w", epoch, err)
		}
		if n == 1 {
			if _, err := tx.Exec(ctx, s.stmt.sweepNonceKeys, epoch-2); err != nil {
				return s.errorf("forget old ACME nonce keys: %w", err)
			}
		}
		if err := tx.QueryRow(ctx, s.stmt.nonceKey, epoch).Scan(&key); err != nil {
			return s.errorf("read the ACME nonce key of epoch %d: %w", epoch, err)
		}
		return nil
	})
	return key, err
}
