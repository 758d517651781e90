package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	return s.oneCert(ctx, s.stmt.certBySerial, "serial", serial)
}

// CertificateByFingerprint implements store.Store.
func (s *Store) CertificateByFingerprint(ctx context.Context, fingerprint string) (store.Certificate, error) {
	return s.oneCert(ctx, s.stmt.certByFingerprint, "fingerprint", fingerprint)
}

func (s *Store) oneCert(ctx context.Context, query, col, val string) (store.Certificate, error) {
	c, err := sqlrec.ScanCertificate(s.read.QueryRow(ctx, query, val).Scan)
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
	q, err := sqlrec.ListCertificates(f, s.d.Placeholder)
	return list(ctx, s, "list certificates", sqlrec.ScanCertificate, q, err)
}

// CountCertificates implements store.Store. Limit and Offset are ignored.
func (s *Store) CountCertificates(ctx context.Context, f store.Filter) (int, error) {
	q, err := sqlrec.CountCertificates(f, s.d.Placeholder)
	if err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	var n int
	if err := s.read.QueryRow(ctx, q.SQL, q.Args...).Scan(&n); err != nil {
		return 0, s.errorf("count certificates: %w", err)
	}
	return n, nil
}

// CertificatesByExpiry implements store.Store.
func (s *Store) CertificatesByExpiry(ctx context.Context, now time.Time) ([]store.ExpiryCount, error) {
	return list(ctx, s, "count certificates by expiry", sqlrec.ScanExpiryCount, sqlrec.CertificatesByExpiry(now, s.d.Placeholder), nil)
}

// ExpiringReport implements store.Store. Both of its queries read one
// snapshot, so the groups' counts and the listed certificates agree.
func (s *Store) ExpiringReport(ctx context.Context, f store.ExpiringFilter) (store.ExpiringReport, error) {
	q, err := sqlrec.ExpiringReport(f, s.d.Placeholder)
	if err != nil {
		return store.ExpiringReport{}, s.errorf("expiry report: %w", err)
	}
	var (
		groups []store.ExpiringGroup
		total  int
		certs  []store.Certificate
	)
	err = s.read.InSnapshot(ctx, func(tx Conn) error {
		err := queryEach(ctx, tx, q.Groups.SQL, q.Groups.Args, func(scan scanFunc) error {
			g, t, err := sqlrec.ScanExpiringGroup(scan)
			if err != nil {
				return err
			}
			groups, total = append(groups, g), t
			return nil
		})
		if err != nil {
			return err
		}
		certs, err = queryAll(ctx, tx, q.Certificates.SQL, q.Certificates.Args, sqlrec.ScanCertificate)
		return err
	})
	if err != nil {
		return store.ExpiringReport{}, s.errorf("expiry report: %w", err)
	}
	return sqlrec.AssembleExpiring(groups, total, certs), nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	q, err := sqlrec.Events(f, s.d.Placeholder)
	return list(ctx, s, "list events", sqlrec.ScanEvent, q, err)
}
