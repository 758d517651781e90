package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Leaves implements store.Store.
func (s *Store) Leaves(ctx context.Context, start int64, limit int) ([]store.Event, error) {
	q, err := sqlrec.Leaves(start, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit leaves: %w", err)
	}
	rows, err := s.pool.Query(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit leaves: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		ev, err := sqlrec.ScanEvent(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("postgres: read audit leaves: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read audit leaves: %w", err)
	}
	return out, nil
}

// LeafHashes implements store.Store.
func (s *Store) LeafHashes(ctx context.Context, start int64, limit int) ([][]byte, error) {
	q, err := sqlrec.LeafHashes(start, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit leaf hashes: %w", err)
	}
	rows, _ := s.pool.Query(ctx, q.SQL, q.Args...)
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit leaf hashes: %w", err)
	}
	return out, nil
}

// EventBySeq implements store.Store.
func (s *Store) EventBySeq(ctx context.Context, seq int64) (store.Event, error) {
	row := s.pool.QueryRow(ctx, "SELECT "+sqlrec.EventColumns+" FROM events WHERE seq = $1", seq)
	ev, err := sqlrec.ScanEvent(row.Scan)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ev, fmt.Errorf("postgres: event %d: %w", seq, store.ErrNotFound)
	case err != nil:
		return ev, fmt.Errorf("postgres: read event %d: %w", seq, err)
	}
	return ev, nil
}

// AddCheckpoint implements store.Store.
func (s *Store) AddCheckpoint(ctx context.Context, c store.Checkpoint) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO checkpoints ("+sqlrec.CheckpointColumns+") VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING",
		c.Size, c.Root, c.Note, sqlrec.Micros(c.Time))
	if err != nil {
		return fmt.Errorf("postgres: store checkpoint of size %d: %w", c.Size, err)
	}
	return nil
}

// LatestCheckpoint implements store.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (store.Checkpoint, error) {
	c, err := sqlrec.ScanCheckpoint(s.pool.QueryRow(ctx, sqlrec.LatestCheckpoint).Scan)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return c, fmt.Errorf("postgres: no checkpoint yet: %w", store.ErrNotFound)
	case err != nil:
		return c, fmt.Errorf("postgres: read the latest checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoints implements store.Store.
func (s *Store) Checkpoints(ctx context.Context, afterSize int64, limit int) ([]store.Checkpoint, error) {
	q, err := sqlrec.Checkpoints(afterSize, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("postgres: read checkpoints: %w", err)
	}
	rows, err := s.pool.Query(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []store.Checkpoint
	for rows.Next() {
		c, err := sqlrec.ScanCheckpoint(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("postgres: read checkpoints: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read checkpoints: %w", err)
	}
	return out, nil
}

// backfillLeaves gives events recorded before the audit log existed their
// leaves, in seq order, under the event lock so that no server appends
// meanwhile.
func backfillLeaves(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", eventLockKey); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, "SELECT "+sqlrec.EventColumns+" FROM events WHERE leaf_index IS NULL ORDER BY seq")
		todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Event, error) { return sqlrec.ScanEvent(r.Scan) })
		if err != nil || len(todo) == 0 {
			return err
		}
		var next int64
		if err := tx.QueryRow(ctx, sqlrec.NextLeafIndex).Scan(&next); err != nil {
			return err
		}
		for _, ev := range todo {
			if _, err := tx.Exec(ctx, "UPDATE events SET leaf_index = $1, leaf_hash = $2 WHERE seq = $3", next, leaf.Hash(&ev), ev.Seq); err != nil {
				return err
			}
			next++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: backfill audit leaves: %w", err)
	}
	return nil
}
