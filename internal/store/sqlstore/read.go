package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/mica-pki/mica/internal/store"
)

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	return s.oneCert(ctx, s.stmt.certBySerial, "serial", serial)
}

// CertificateByFingerprint implements store.Store.
func (s *Store) CertificateByFingerprint(ctx context.Context, fingerprint string) (store.Certificate, error) {
	return s.oneCert(ctx, s.stmt.certByFingerprint, "fingerprint", fingerprint)
}

// CertificateByToken implements store.Store.
func (s *Store) CertificateByToken(ctx context.Context, jti string) (store.Certificate, error) {
	return s.oneCert(ctx, s.stmt.certByToken, "token", jti)
}

func (s *Store) oneCert(ctx context.Context, query, col, val string) (store.Certificate, error) {
	c, err := scanCertificate(s.read.QueryRow(ctx, query, val).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Certificate{}, s.errorf("certificate with %s %s: %w", col, val, store.ErrNotFound)
	case err != nil:
		return store.Certificate{}, s.errorf("read certificate with %s %s: %w", col, val, err)
	}
	return c, nil
}

// ListCertificates implements store.Store.
func (s *Store) ListCertificates(ctx context.Context, f store.Filter) ([]store.Certificate, error) {
	q, err := listCertificates(f, &s.d)
	return list(ctx, s, "list certificates", scanCertificate, q, err)
}

// CountCertificates implements store.Store. Limit and Offset are ignored.
func (s *Store) CountCertificates(ctx context.Context, f store.Filter) (int, error) {
	q, err := countCertificates(f, &s.d)
	if err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	var n int
	if err := s.read.QueryRow(ctx, q.SQL, q.Args...).Scan(&n); err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	return n, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	q, err := events(f, &s.d)
	return list(ctx, s, "list events", scanEvent, q, err)
}

// LastEventSeq implements store.Store.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.read.QueryRow(ctx, s.stmt.lastEventSeq).Scan(&seq); err != nil {
		return 0, s.errorf("read the last event: %w", err)
	}
	return seq, nil
}
