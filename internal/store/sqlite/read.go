package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

func placeholder(int) string { return "?" }

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	return s.oneCert(ctx, "serial", serial)
}

// CertificateByFingerprint implements store.Store.
func (s *Store) CertificateByFingerprint(ctx context.Context, fingerprint string) (store.Certificate, error) {
	return s.oneCert(ctx, "fingerprint", fingerprint)
}

func (s *Store) oneCert(ctx context.Context, col, val string) (store.Certificate, error) {
	row := s.readers.QueryRowContext(ctx, "SELECT "+sqlrec.CertColumns+" FROM certificates WHERE "+col+" = ?", val)
	c, err := sqlrec.ScanCertificate(row.Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Certificate{}, fmt.Errorf("sqlite: certificate with %s %s: %w", col, val, store.ErrNotFound)
	case err != nil:
		return store.Certificate{}, fmt.Errorf("sqlite: read certificate with %s %s: %w", col, val, err)
	}
	return c, nil
}

// ListCertificates implements store.Store.
func (s *Store) ListCertificates(ctx context.Context, f store.Filter) ([]store.Certificate, error) {
	q, err := sqlrec.ListCertificates(f, placeholder)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	defer rows.Close()
	var out []store.Certificate
	for rows.Next() {
		c, err := sqlrec.ScanCertificate(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list certificates: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	return out, nil
}

// CountCertificates implements store.Store. Limit and Offset are ignored.
func (s *Store) CountCertificates(ctx context.Context, f store.Filter) (int, error) {
	q, err := sqlrec.CountCertificates(f, placeholder)
	if err != nil {
		return 0, fmt.Errorf("sqlite: count certificates: %w", err)
	}
	var n int
	if err := s.readers.QueryRowContext(ctx, q.SQL, q.Args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count certificates: %w", err)
	}
	return n, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	q, err := sqlrec.Events(f, placeholder)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list events: %w", err)
	}
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list events: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		ev, err := sqlrec.ScanEvent(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list events: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list events: %w", err)
	}
	return out, nil
}
