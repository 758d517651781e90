package sqlite

import (
	"context"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// ExpiringReport implements store.Store. Both queries read one snapshot:
// a read transaction in WAL mode sees the database as of its first read.
func (s *Store) ExpiringReport(ctx context.Context, f store.ExpiringFilter) (store.ExpiringReport, error) {
	q, err := sqlrec.ExpiringReport(f, placeholder)
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	tx, err := s.readers.BeginTx(ctx, nil)
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	defer tx.Rollback()
	var groups []store.ExpiringGroup
	total := 0
	rows, err := tx.QueryContext(ctx, q.Groups.SQL, q.Groups.Args...)
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	for rows.Next() {
		g, t, err := sqlrec.ScanExpiringGroup(rows.Scan)
		if err != nil {
			rows.Close()
			return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
		}
		groups, total = append(groups, g), t
	}
	if err := errorsOf(rows); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	var certs []store.Certificate
	if rows, err = tx.QueryContext(ctx, q.Certificates.SQL, q.Certificates.Args...); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	for rows.Next() {
		c, err := sqlrec.ScanCertificate(rows.Scan)
		if err != nil {
			rows.Close()
			return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
		}
		certs = append(certs, c)
	}
	if err := errorsOf(rows); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("sqlite: expiry report: %w", err)
	}
	return sqlrec.AssembleExpiring(groups, total, certs), nil
}

// errorsOf closes rows and returns the error that ended the iteration.
func errorsOf(rows interface {
	Err() error
	Close() error
}) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}
