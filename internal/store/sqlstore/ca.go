package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// BindCA implements store.Store, in one transaction on the writer.
func (s *Store) BindCA(ctx context.Context, b store.CABinding) (err error) {
	ctx, end := s.call(ctx, "bind the database to its CA", true)
	defer end(&err)
	if b.Root == "" {
		return s.errorf("bind CA: no root fingerprint given")
	}
	return inTx(ctx, s.write, &s.d, "bind CA", func(tx Conn) error {
		recorded, err := s.boundRoot(ctx, tx)
		if err != nil {
			return err
		}
		if recorded == "" {
			hasEvents, ours, err := s.priorRecords(ctx, tx, b.Issuer)
			if err != nil {
				return err
			}
			switch {
			case hasEvents && !ours:
				return &store.ForeignCAError{Want: b.Root}
			case !hasEvents && !b.Create:
				return store.ErrNoCA
			}
			// Another server may bind in the same moment: the insert does
			// nothing then, and the read below sees the winner.
			if _, err := tx.Exec(ctx, s.d.rebind("INSERT INTO ca_root (id, fingerprint, recorded_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING"),
				b.Root, time.Now().UnixMicro()); err != nil {
				return s.errorf("bind CA: %w", err)
			}
			if recorded, err = s.boundRoot(ctx, tx); err != nil {
				return err
			}
		}
		if recorded != b.Root {
			return &store.ForeignCAError{Recorded: recorded, Want: b.Root}
		}
		return nil
	})
}

// boundRoot is the recorded root fingerprint, "" when none is.
func (s *Store) boundRoot(ctx context.Context, tx Conn) (string, error) {
	var fp string
	switch err := tx.QueryRow(ctx, "SELECT fingerprint FROM ca_root WHERE id = 1").Scan(&fp); {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", s.errorf("bind CA: read the recorded CA: %w", err)
	}
	return fp, nil
}

// priorRecords says whether the database holds any event, and whether it
// holds a certificate of issuer (the mark of a database this CA wrote
// before bindings were recorded: every mica init issues one).
func (s *Store) priorRecords(ctx context.Context, tx Conn, issuer string) (hasEvents, ours bool, err error) {
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM events)").Scan(&hasEvents); err != nil {
		return false, false, s.errorf("bind CA: look for events: %w", err)
	}
	if err := tx.QueryRow(ctx, s.d.rebind("SELECT EXISTS (SELECT 1 FROM certificates WHERE issuer = ?)"), issuer).Scan(&ours); err != nil {
		return false, false, s.errorf("bind CA: look for this CA's certificates: %w", err)
	}
	return hasEvents, ours, nil
}
