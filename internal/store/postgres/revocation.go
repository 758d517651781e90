package postgres

import (
	"context"
	"time"
)

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
