package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

var _ store.ACMEStore = (*Store)(nil)

func acmeTable(k store.ACMEKind) (string, error) {
	t := store.ACMETable(k)
	if t == "" {
		return "", fmt.Errorf("postgres: unknown ACME record kind %q", k)
	}
	return t, nil
}

func expiresMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return sqlrec.Micros(t)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// CreateACME implements store.ACMEStore.
func (s *Store) CreateACME(ctx context.Context, recs ...store.ACMERecord) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, r := range recs {
			t, err := acmeTable(r.Kind)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+t+" (id, parent, lookup, status, expires, data) VALUES ($1, $2, $3, $4, $5, $6)",
				r.ID, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data); err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("postgres: ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
				}
				return fmt.Errorf("postgres: create ACME %s %s: %w", r.Kind, r.ID, err)
			}
		}
		return nil
	})
	return err
}

// UpdateACME implements store.ACMEStore.
func (s *Store) UpdateACME(ctx context.Context, r store.ACMERecord, fromStatus string) error {
	t, err := acmeTable(r.Kind)
	if err != nil {
		return err
	}
	// One statement: the update happens only from fromStatus, and the
	// status read from the same snapshot says why when it did not.
	var updated bool
	var status *string
	err = s.pool.QueryRow(ctx, `WITH upd AS (
		UPDATE `+t+` SET parent = $2, lookup = $3, status = $4, expires = $5, data = $6
		WHERE id = $1 AND status = $7 RETURNING id
	) SELECT EXISTS (SELECT 1 FROM upd), (SELECT status FROM `+t+` WHERE id = $1)`,
		r.ID, r.Parent, r.Lookup, r.Status, expiresMicros(r.Expires), r.Data, fromStatus).Scan(&updated, &status)
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("postgres: ACME %s %s: %w", r.Kind, r.ID, store.ErrConflict)
	case err != nil:
		return fmt.Errorf("postgres: update ACME %s %s: %w", r.Kind, r.ID, err)
	case updated:
		return nil
	case status == nil:
		return fmt.Errorf("postgres: ACME %s %s: %w", r.Kind, r.ID, store.ErrNotFound)
	}
	return fmt.Errorf("postgres: ACME %s %s is %s, not %s: %w", r.Kind, r.ID, *status, fromStatus, store.ErrConflict)
}

// ACMEByID implements store.ACMEStore.
func (s *Store) ACMEByID(ctx context.Context, kind store.ACMEKind, id string) (store.ACMERecord, error) {
	return s.oneACME(ctx, kind, "id", id)
}

// ACMEByLookup implements store.ACMEStore.
func (s *Store) ACMEByLookup(ctx context.Context, kind store.ACMEKind, lookup string) (store.ACMERecord, error) {
	if lookup == "" {
		return store.ACMERecord{}, fmt.Errorf("postgres: ACME %s with an empty lookup key: %w", kind, store.ErrNotFound)
	}
	return s.oneACME(ctx, kind, "lookup", lookup)
}

func (s *Store) oneACME(ctx context.Context, kind store.ACMEKind, col, val string) (store.ACMERecord, error) {
	t, err := acmeTable(kind)
	if err != nil {
		return store.ACMERecord{}, err
	}
	row := s.pool.QueryRow(ctx, "SELECT id, parent, lookup, status, expires, data FROM "+t+" WHERE "+col+" = $1", val)
	r, err := scanACME(kind, row.Scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("postgres: ACME %s with %s %s: %w", kind, col, val, store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("postgres: read ACME %s: %w", kind, err)
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
	// The ACME door makes IDs that sort in creation order.
	rows, err := s.pool.Query(ctx, "SELECT id, parent, lookup, status, expires, data FROM "+t+" WHERE parent = $1 ORDER BY id LIMIT $2", parent, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list ACME %s: %w", kind, err)
	}
	defer rows.Close()
	var out []store.ACMERecord
	for rows.Next() {
		r, err := scanACME(kind, rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("postgres: list ACME %s: %w", kind, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list ACME %s: %w", kind, err)
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

// AddACMENonce implements store.ACMEStore; expired nonces are swept now and
// then on the way.
func (s *Store) AddACMENonce(ctx context.Context, nonce string, expires time.Time) error {
	if _, err := s.pool.Exec(ctx, "INSERT INTO acme_nonces (nonce, expires) VALUES ($1, $2)", nonce, sqlrec.Micros(expires)); err != nil {
		return fmt.Errorf("postgres: add ACME nonce: %w", err)
	}
	if nonce[len(nonce)-1]%64 == 0 {
		s.pool.Exec(ctx, "DELETE FROM acme_nonces WHERE expires < $1", sqlrec.Micros(time.Now()))
	}
	return nil
}

// UseACMENonce implements store.ACMEStore.
func (s *Store) UseACMENonce(ctx context.Context, nonce string, now time.Time) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM acme_nonces WHERE nonce = $1 AND expires >= $2", nonce, sqlrec.Micros(now))
	if err != nil {
		return fmt.Errorf("postgres: use ACME nonce: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("postgres: ACME nonce: %w", store.ErrNotFound)
	}
	return nil
}
