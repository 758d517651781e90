package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// IsDenied implements store.Store.
func (s *Store) IsDenied(ctx context.Context, identity string) (bool, error) {
	var denied bool
	err := s.isDenied.QueryRowContext(ctx, identity).Scan(&denied)
	if err != nil {
		return false, fmt.Errorf("sqlite: read the deny list: %w", err)
	}
	return denied, nil
}

// DeniedIdentities implements store.Store.
func (s *Store) DeniedIdentities(ctx context.Context) ([]store.Denial, error) {
	rows, err := s.readers.QueryContext(ctx, "SELECT "+sqlrec.DenialColumns+" FROM denied_identities ORDER BY identity")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read the deny list: %w", err)
	}
	defer rows.Close()
	var out []store.Denial
	for rows.Next() {
		d, err := sqlrec.ScanDenial(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: read the deny list: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read the deny list: %w", err)
	}
	return out, nil
}

// RevokedCertificates implements store.Store.
func (s *Store) RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error {
	q := sqlrec.RevokedCertificates(issuer, sqlrec.Micros(validAt), placeholder)
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return fmt.Errorf("sqlite: list revoked certificates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := sqlrec.ScanRevoked(rows.Scan)
		if err != nil {
			return fmt.Errorf("sqlite: list revoked certificates: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: list revoked certificates: %w", err)
	}
	return nil
}

// LastEventSeq implements store.Store.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.readers.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) FROM events").Scan(&seq); err != nil {
		return 0, fmt.Errorf("sqlite: read the last event: %w", err)
	}
	return seq, nil
}
