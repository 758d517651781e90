package postgres

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
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM denied_identities WHERE identity = $1)", identity).Scan(&denied)
	if err != nil {
		return false, fmt.Errorf("postgres: read the deny list: %w", err)
	}
	return denied, nil
}

// DeniedIdentities implements store.Store.
func (s *Store) DeniedIdentities(ctx context.Context) ([]store.Denial, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+sqlrec.DenialColumns+" FROM denied_identities ORDER BY identity")
	if err != nil {
		return nil, fmt.Errorf("postgres: read the deny list: %w", err)
	}
	defer rows.Close()
	var out []store.Denial
	for rows.Next() {
		d, err := sqlrec.ScanDenial(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("postgres: read the deny list: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read the deny list: %w", err)
	}
	return out, nil
}

// RevokedCertificates implements store.Store.
func (s *Store) RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error {
	q := sqlrec.RevokedCertificates(issuer, sqlrec.Micros(validAt), placeholder)
	rows, err := s.pool.Query(ctx, q.SQL, q.Args...)
	if err != nil {
		return fmt.Errorf("postgres: list revoked certificates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := sqlrec.ScanRevoked(rows.Scan)
		if err != nil {
			return fmt.Errorf("postgres: list revoked certificates: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: list revoked certificates: %w", err)
	}
	return nil
}

// LastEventSeq implements store.Store.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM events").Scan(&seq); err != nil {
		return 0, fmt.Errorf("postgres: read the last event: %w", err)
	}
	return seq, nil
}

// revocationChannel is the LISTEN/NOTIFY channel on which every batch that
// revokes, denies or allows announces its commit to every server sharing
// the database.
const revocationChannel = "mica_revocations"

// ListenRevocations calls fn each time any server sharing this database
// commits a revocation or deny list change, until ctx ends. It reconnects
// after a lost connection and calls fn once after each (re)connection, so
// that a caller never misses a change made while it was not listening.
func (s *Store) ListenRevocations(ctx context.Context, fn func()) error {
	for {
		err := s.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		_ = err // the connection broke; listen again after a pause
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, fn func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is taken out of the pool for good: a LISTEN session
	// must not be handed to another caller.
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pc.Exec(ctx, "LISTEN "+revocationChannel); err != nil {
		return err
	}
	fn()
	for {
		if _, err := pc.WaitForNotification(ctx); err != nil {
			return err
		}
		fn()
	}
}
