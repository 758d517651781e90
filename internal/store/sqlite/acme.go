package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

var _ store.ACMEStore = (*Store)(nil)

// ACME state is small and written once or twice per request, so it goes
// straight to the writer connection rather than through the group
// committer, whose batches are shaped for certificates and events.

func acmeTable(k store.ACMEKind) (string, error) {
	t := store.ACMETable(k)
	if t == "" {
		return "", fmt.Errorf("sqlite: unknown ACME record kind %q", k)
	}
	return t, nil
}

func expiresMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return sqlrec.Micros(t)
}

// CreateACME implements store.ACMEStore.
func (s *Store) CreateACME(ctx context.Context, recs ...store.ACMERecord) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: create ACME records: %w", err)
	}
	defer tx.Rollback()
	for _, r := range recs {
		t, err := acmeTable(r.Kind)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO "+t+" (id, parent, lookup, status, expires, data) VALUES (?, ?, ?, ?, ?, ?)",
			r.ID, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data)
		if err != nil {
			if strings.Contains(err.Error(), "UNIQUE constraint") {
				return fmt.Errorf("sqlite: ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
			}
			return fmt.Errorf("sqlite: create ACME %s %s: %w", r.Kind, r.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create ACME records: %w", err)
	}
	return nil
}

// UpdateACME implements store.ACMEStore.
func (s *Store) UpdateACME(ctx context.Context, r store.ACMERecord, fromStatus string) error {
	t, err := acmeTable(r.Kind)
	if err != nil {
		return err
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: update ACME %s %s: %w", r.Kind, r.ID, err)
	}
	defer tx.Rollback()
	var status string
	err = tx.QueryRowContext(ctx, "SELECT status FROM "+t+" WHERE id = ?", r.ID).Scan(&status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("sqlite: ACME %s %s: %w", r.Kind, r.ID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("sqlite: update ACME %s %s: %w", r.Kind, r.ID, err)
	case status != fromStatus:
		return fmt.Errorf("sqlite: ACME %s %s is %s, not %s: %w", r.Kind, r.ID, status, fromStatus, store.ErrConflict)
	}
	_, err = tx.ExecContext(ctx, "UPDATE "+t+" SET parent = ?, lookup = ?, status = ?, expires = ?, data = ? WHERE id = ?",
		r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data, r.ID)
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint") {
			return fmt.Errorf("sqlite: ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
		}
		return fmt.Errorf("sqlite: update ACME %s %s: %w", r.Kind, r.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: update ACME %s %s: %w", r.Kind, r.ID, err)
	}
	return nil
}

// ACMEByID implements store.ACMEStore.
func (s *Store) ACMEByID(ctx context.Context, kind store.ACMEKind, id string) (store.ACMERecord, error) {
	return s.oneACME(ctx, kind, "id", id)
}

// ACMEByLookup implements store.ACMEStore.
func (s *Store) ACMEByLookup(ctx context.Context, kind store.ACMEKind, lookup string) (store.ACMERecord, error) {
	if lookup == "" {
		return store.ACMERecord{}, fmt.Errorf("sqlite: ACME %s with an empty lookup key: %w", kind, store.ErrNotFound)
	}
	return s.oneACME(ctx, kind, "lookup", lookup)
}

func (s *Store) oneACME(ctx context.Context, kind store.ACMEKind, col, val string) (store.ACMERecord, error) {
	t, err := acmeTable(kind)
	if err != nil {
		return store.ACMERecord{}, err
	}
	// A reader sees every committed write (WAL), and ACME writes commit
	// before they return, so reads need not queue behind the committer on
	// the single writer connection.
	row := s.readers.QueryRowContext(ctx, "SELECT id, parent, lookup, status, expires, data FROM "+t+" WHERE "+col+" = ?", val)
	r, err := scanACME(kind, row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("sqlite: ACME %s with %s %s: %w", kind, col, val, store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("sqlite: read ACME %s: %w", kind, err)
	}
	return r, nil
}

// ACMEChildren implements store.ACMEStore.
func (s *Store) ACMEChildren(ctx context.Context, kind store.ACMEKind, parent string, limit int) ([]store.ACMERecord, error) {
	t, err := acmeTable(kind)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.readers.QueryContext(ctx, "SELECT id, parent, lookup, status, expires, data FROM "+t+" WHERE parent = ? ORDER BY id LIMIT ?", parent, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list ACME %s: %w", kind, err)
	}
	defer rows.Close()
	var out []store.ACMERecord
	for rows.Next() {
		r, err := scanACME(kind, rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list ACME %s: %w", kind, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list ACME %s: %w", kind, err)
	}
	return out, nil
}

func scanACME(kind store.ACMEKind, scan func(...any) error) (store.ACMERecord, error) {
	r := store.ACMERecord{Kind: kind}
	var exp int64
	if err := scan(&r.ID, &r.Parent, &r.Lookup, &r.Status, &exp, &r.Data); err != nil {
		return store.ACMERecord{}, err
	}
	if exp != 0 {
		r.Expires = sqlrec.FromMicros(exp)
	}
	return r, nil
}

// AddACMENonce implements store.ACMEStore. Expired nonces are swept now
// and then on the way, so the table stays the size of the nonces in flight.
func (s *Store) AddACMENonce(ctx context.Context, nonce string, expires time.Time) error {
	if _, err := s.writer.ExecContext(ctx, "INSERT INTO acme_nonces (nonce, expires) VALUES (?, ?)", nonce, sqlrec.Micros(expires)); err != nil {
		return fmt.Errorf("sqlite: add ACME nonce: %w", err)
	}
	if nonce[len(nonce)-1]%64 == 0 {
		s.writer.ExecContext(ctx, "DELETE FROM acme_nonces WHERE expires < ?", sqlrec.Micros(time.Now()))
	}
	return nil
}

// UseACMENonce implements store.ACMEStore.
func (s *Store) UseACMENonce(ctx context.Context, nonce string, now time.Time) error {
	res, err := s.writer.ExecContext(ctx, "DELETE FROM acme_nonces WHERE nonce = ? AND expires >= ?", nonce, sqlrec.Micros(now))
	if err != nil {
		return fmt.Errorf("sqlite: use ACME nonce: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("sqlite: ACME nonce: %w", store.ErrNotFound)
	}
	return nil
}
