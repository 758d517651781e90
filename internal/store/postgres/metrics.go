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
	counts, err := sqlrec.ScanExpiryCounts(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: count certificates by expiry: %w", err)
	}
	return counts, nil
}

// CommitStats are the group committer's running totals, for metrics.
func (s *Store) CommitStats() groupcommit.Stats { return s.committer.Stats() }
