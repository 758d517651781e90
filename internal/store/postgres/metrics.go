package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// CertificatesByExpiry implements store.Store.
func (s *Store) CertificatesByExpiry(ctx context.Context, now time.Time) ([]store.ExpiryCount, error) {
	q := sqlrec.CertificatesByExpiry(now, placeholder)
	rows, err := s.pool.Query(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: count certificates by expiry: %w", err)
	}
	defer rows.Close()
	var out []store.ExpiryCount
	for rows.Next() {
		c, err := sqlrec.ScanExpiryCount(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("postgres: count certificates by expiry: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: count certificates by expiry: %w", err)
	}
	return out, nil
}

// CommitStats are the group committer's running totals, for metrics.
func (s *Store) CommitStats() groupcommit.Stats { return s.committer.Stats() }
