package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Leaves implements store.Store.
func (s *Store) Leaves(ctx context.Context, start int64, limit int) ([]store.Event, error) {
	q, err := sqlrec.Leaves(start, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaves: %w", err)
	}
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaves: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		ev, err := sqlrec.ScanEvent(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: read audit leaves: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaves: %w", err)
	}
	return out, nil
}

// LeafHashes implements store.Store.
func (s *Store) LeafHashes(ctx context.Context, start int64, limit int) ([][]byte, error) {
	q, err := sqlrec.LeafHashes(start, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaf hashes: %w", err)
	}
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaf hashes: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("sqlite: read audit leaf hashes: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read audit leaf hashes: %w", err)
	}
	return out, nil
}

// EventBySeq implements store.Store.
func (s *Store) EventBySeq(ctx context.Context, seq int64) (store.Event, error) {
	row := s.readers.QueryRowContext(ctx, "SELECT "+sqlrec.EventColumns+" FROM events WHERE seq = ?", seq)
	ev, err := sqlrec.ScanEvent(row.Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ev, fmt.Errorf("sqlite: event %d: %w", seq, store.ErrNotFound)
	case err != nil:
		return ev, fmt.Errorf("sqlite: read event %d: %w", seq, err)
	}
	return ev, nil
}

// AddCheckpoint implements store.Store. It goes straight to the writer
// connection, between batches: one small row every few seconds does not
// need group commit.
func (s *Store) AddCheckpoint(ctx context.Context, c store.Checkpoint) error {
	_, err := s.writer.ExecContext(ctx, "INSERT INTO checkpoints ("+sqlrec.CheckpointColumns+") VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING",
		c.Size, c.Root, c.Note, sqlrec.Micros(c.Time))
	if err != nil {
		return fmt.Errorf("sqlite: store checkpoint of size %d: %w", c.Size, err)
	}
	return nil
}

// LatestCheckpoint implements store.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (store.Checkpoint, error) {
	c, err := sqlrec.ScanCheckpoint(s.readers.QueryRowContext(ctx, sqlrec.LatestCheckpoint).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, fmt.Errorf("sqlite: no checkpoint yet: %w", store.ErrNotFound)
	case err != nil:
		return c, fmt.Errorf("sqlite: read the latest checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoints implements store.Store.
func (s *Store) Checkpoints(ctx context.Context, afterSize int64, limit int) ([]store.Checkpoint, error) {
	q, err := sqlrec.Checkpoints(afterSize, limit, placeholder)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read checkpoints: %w", err)
	}
	rows, err := s.readers.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []store.Checkpoint
	for rows.Next() {
		c, err := sqlrec.ScanCheckpoint(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: read checkpoints: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read checkpoints: %w", err)
	}
	return out, nil
}

// backfillLeaves gives events recorded before the audit log existed their
// leaves, in seq order, ahead of any new event. It runs at open, before the
// committer starts.
func backfillLeaves(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT "+sqlrec.EventColumns+" FROM events WHERE leaf_index IS NULL ORDER BY seq")
	if err != nil {
		return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
	}
	var todo []store.Event
	for rows.Next() {
		ev, err := sqlrec.ScanEvent(rows.Scan)
		if err != nil {
			rows.Close()
			return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
		}
		todo = append(todo, ev)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
	}
	if len(todo) == 0 {
		return nil
	}
	var next int64
	if err := tx.QueryRowContext(ctx, sqlrec.NextLeafIndex).Scan(&next); err != nil {
		return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
	}
	for _, ev := range todo {
		if _, err := tx.ExecContext(ctx, "UPDATE events SET leaf_index = ?, leaf_hash = ? WHERE seq = ?", next, leaf.Hash(&ev), ev.Seq); err != nil {
			return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
		}
		next++
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: backfill audit leaves: %w", err)
	}
	return nil
}
