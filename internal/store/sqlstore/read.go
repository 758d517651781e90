package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/mica-pki/mica/internal/store"
)

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (_ store.Certificate, err error) {
	ctx, end := s.call(ctx, "read certificate "+serial, false)
	defer end(&err)
	return s.oneCert(ctx, s.stmt.certBySerial, "serial", serial)
}

// CertificateWithoutDER implements store.Store.
func (s *Store) CertificateWithoutDER(ctx context.Context, serial string) (_ store.Certificate, err error) {
	ctx, end := s.call(ctx, "read certificate "+serial, false)
	defer end(&err)
	return s.oneCert(ctx, s.stmt.certBySerialNoDER, "serial", serial)
}

// CertificateStatus implements store.Store.
func (s *Store) CertificateStatus(ctx context.Context, serial string) (_ store.CertificateStatus, err error) {
	ctx, end := s.call(ctx, "read the status of certificate "+serial, false)
	defer end(&err)
	var st store.CertificateStatus
	var status string
	var revokedAt *int64
	var reason int64
	err = s.read.QueryRow(ctx, s.stmt.certStatus, serial).Scan(&status, &revokedAt, &reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return st, s.errorf("certificate with serial %s: %w", serial, store.ErrNotFound)
	case err != nil:
		return st, s.errorf("read the status of certificate %s: %w", serial, err)
	}
	st.Status, st.RevocationReason = store.Status(status), int(reason)
	if revokedAt != nil {
		st.RevokedAt = fromMicros(*revokedAt)
	}
	return st, nil
}

// CertificateByFingerprint implements store.Store.
func (s *Store) CertificateByFingerprint(ctx context.Context, fingerprint string) (_ store.Certificate, err error) {
	ctx, end := s.call(ctx, "read certificate with fingerprint "+fingerprint, false)
	defer end(&err)
	return s.oneCert(ctx, s.stmt.certByFingerprint, "fingerprint", fingerprint)
}

// CertificateByToken implements store.Store.
func (s *Store) CertificateByToken(ctx context.Context, jti string) (_ store.Certificate, err error) {
	ctx, end := s.call(ctx, "read the certificate of token "+jti, false)
	defer end(&err)
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
func (s *Store) ListCertificates(ctx context.Context, f store.Filter) (_ []store.Certificate, err error) {
	ctx, end := s.call(ctx, "list certificates", false)
	defer end(&err)
	q, err := listCertificates(f, &s.d)
	return list(ctx, s, "list certificates", scanCertificate, q, err)
}

// CountCertificates implements store.Store. Limit and Offset are ignored.
func (s *Store) CountCertificates(ctx context.Context, f store.Filter) (_ int, err error) {
	ctx, end := s.call(ctx, "count certificates", false)
	defer end(&err)
	q, err := countCertificates(f, &s.d)
	if err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	var n int
	if err := s.read.QueryRow(ctx, q.SQL, s.d.planEach(q.Args)...).Scan(&n); err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	return n, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) (_ []store.Event, err error) {
	ctx, end := s.call(ctx, "list events", false)
	defer end(&err)
	q, err := events(f, &s.d)
	return list(ctx, s, "list events", scanEvent, q, err)
}

// LastEventSeq implements store.Store.
func (s *Store) LastEventSeq(ctx context.Context) (_ int64, err error) {
	ctx, end := s.call(ctx, "read the last event", false)
	defer end(&err)
	var seq int64
	if err := s.read.QueryRow(ctx, s.stmt.lastEventSeq).Scan(&seq); err != nil {
		return 0, s.errorf("read the last event: %w", err)
	}
	return seq, nil
}
