package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// ExpiringReport implements store.Store. Both queries read one snapshot
// (a read-only, repeatable-read transaction).
func (s *Store) ExpiringReport(ctx context.Context, f store.ExpiringFilter) (store.ExpiringReport, error) {
	q, err := sqlrec.ExpiringReport(f, placeholder)
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var groups []store.ExpiringGroup
	total := 0
	rows, err := tx.Query(ctx, q.Groups.SQL, q.Groups.Args...)
	if err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	for rows.Next() {
		g, t, err := sqlrec.ScanExpiringGroup(rows.Scan)
		if err != nil {
			rows.Close()
			return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
		}
		groups, total = append(groups, g), t
	}
	if err := rows.Err(); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	var certs []store.Certificate
	if rows, err = tx.Query(ctx, q.Certificates.SQL, q.Certificates.Args...); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	for rows.Next() {
		c, err := sqlrec.ScanCertificate(rows.Scan)
		if err != nil {
			rows.Close()
			return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
		}
		certs = append(certs, c)
	}
	if err := rows.Err(); err != nil {
		return store.ExpiringReport{}, fmt.Errorf("postgres: expiry report: %w", err)
	}
	return sqlrec.AssembleExpiring(groups, total, certs), nil
}
