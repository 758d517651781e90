package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
)

// Leaves implements store.Store.
func (s *Store) Leaves(ctx context.Context, start int64, limit int) (_ []store.Event, err error) {
	ctx, end := s.call(ctx, "read audit leaves", false)
	defer end(&err)
	q, err := leafQuery(eventSelect, start, limit, &s.d)
	return list(ctx, s, "read audit leaves", scanEvent, q, err)
}

// LeafHashes implements store.Store.
func (s *Store) LeafHashes(ctx context.Context, start int64, limit int) (_ [][]byte, err error) {
	ctx, end := s.call(ctx, "read audit leaf hashes", false)
	defer end(&err)
	q, err := leafQuery("leaf_hash", start, limit, &s.d)
	return list(ctx, s, "read audit leaf hashes", scanOne[[]byte], q, err)
}

// EventBySeq implements store.Store.
func (s *Store) EventBySeq(ctx context.Context, seq int64) (_ store.Event, err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("read event %d", seq), false)
	defer end(&err)
	ev, err := scanEvent(s.read.QueryRow(ctx, s.stmt.eventBySeq, seq).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ev, s.errorf("event %d: %w", seq, store.ErrNotFound)
	case err != nil:
		return ev, s.errorf("read event %d: %w", seq, err)
	}
	return ev, nil
}

// AddCheckpoint implements store.Store. It goes straight to the database,
// between batches: one small row every few seconds does not need group
// commit.
func (s *Store) AddCheckpoint(ctx context.Context, c store.Checkpoint) (err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("store checkpoint of size %d", c.Size), true)
	defer end(&err)
	if _, err := s.write.Exec(ctx, s.stmt.addCheckpoint, c.Size, c.Root, c.Note, micros(c.Time)); err != nil {
		return s.errorf("store checkpoint of size %d: %w", c.Size, err)
	}
	return nil
}

// LatestCheckpoint implements store.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (_ store.Checkpoint, err error) {
	ctx, end := s.call(ctx, "read the latest checkpoint", false)
	defer end(&err)
	c, err := scanCheckpoint(s.read.QueryRow(ctx, s.stmt.latestCheckpoint).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, s.errorf("no checkpoint yet: %w", store.ErrNotFound)
	case err != nil:
		return c, s.errorf("read the latest checkpoint: %w", err)
	}
	return c, nil
}

// Checkpoints implements store.Store.
func (s *Store) Checkpoints(ctx context.Context, afterSize int64, limit int) (_ []store.Checkpoint, err error) {
	ctx, end := s.call(ctx, "read checkpoints", false)
	defer end(&err)
	q, err := checkpoints(afterSize, limit, &s.d)
	return list(ctx, s, "read checkpoints", scanCheckpoint, q, err)
}

// backfillLeaves gives events recorded before the audit log existed their
// leaves, in seq order, ahead of any new event. Open runs it before the
// committer starts, under d.LockEvents so that no other server appends
// meanwhile.
func backfillLeaves(ctx context.Context, db DB, d *Dialect) error {
	err := db.InTx(ctx, func(tx Conn) error {
		if d.LockEvents != "" {
			if _, err := tx.Exec(ctx, d.LockEvents); err != nil {
				return err
			}
		}
		todo, err := queryAll(ctx, tx, "SELECT "+eventSelect+" FROM events WHERE leaf_index IS NULL ORDER BY seq", nil, scanEvent)
		if err != nil || len(todo) == 0 {
			return err
		}
		var next int64
		if err := tx.QueryRow(ctx, NextLeafIndex).Scan(&next); err != nil {
			return err
		}
		update := d.rebind("UPDATE events SET leaf_index = ?, leaf_hash = ? WHERE seq = ?")
		for _, ev := range todo {
			if _, err := tx.Exec(ctx, update, next, leaf.Hash(&ev), ev.Seq); err != nil {
				return err
			}
			next++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: backfill audit leaves: %w", d.Name, err)
	}
	return nil
}
