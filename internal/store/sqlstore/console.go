package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// The web console's links and sessions: small, human-speed writes, each a
// guarded op with its audit event (like governance), so that a link is
// used once across replicas and every session's start and end is a leaf.

func encodeRoles(roles []string) string {
	if roles == nil {
		roles = []string{}
	}
	b, _ := json.Marshal(roles)
	return string(b)
}

func decodeRoles(s string) ([]string, error) {
	var roles []string
	if err := json.Unmarshal([]byte(s), &roles); err != nil {
		return nil, fmt.Errorf("roles %q: %w", s, err)
	}
	return roles, nil
}

// CreateConsoleLink implements store.Console.
func (s *Store) CreateConsoleLink(ctx context.Context, l *store.ConsoleLink, ev *store.Event) error {
	if l.Hash == "" || l.Serial == "" || !l.ExpiresAt.After(l.CreatedAt) {
		return s.errorf("create console link: hash, serial and an expiry after its creation are required")
	}
	return s.guarded(ctx, "create a console link", ev, Guard{Want: 1,
		SQL:  `INSERT INTO console_links (hash, serial, identity, roles, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		Args: []any{l.Hash, l.Serial, l.Identity, encodeRoles(l.Roles), micros(l.CreatedAt), micros(l.ExpiresAt)}})
}

// ConsoleLink implements store.Console.
func (s *Store) ConsoleLink(ctx context.Context, hash string) (_ store.ConsoleLink, err error) {
	ctx, end := s.call(ctx, "read a console link", false)
	defer end(&err)
	var l store.ConsoleLink
	var roles string
	var created, expires, used int64
	err = s.read.QueryRow(ctx, s.d.rebind(`SELECT hash, serial, identity, roles, created_at, expires_at, used_at FROM console_links WHERE hash = ?`), hash).
		Scan(&l.Hash, &l.Serial, &l.Identity, &roles, &created, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return l, s.errorf("console link: %w", store.ErrNotFound)
	case err != nil:
		return l, s.errorf("read a console link: %w", err)
	}
	if l.Roles, err = decodeRoles(roles); err != nil {
		return l, s.errorf("read a console link: %w", err)
	}
	l.CreatedAt, l.ExpiresAt = fromMicros(created), fromMicros(expires)
	if used != 0 {
		l.UsedAt = fromMicros(used)
	}
	return l, nil
}

func insertSession(cs *store.ConsoleSession) Guard {
	return Guard{Want: 1,
		SQL: `INSERT INTO console_sessions (hash, serial, identity, roles, method, source, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		Args: []any{cs.Hash, cs.Serial, cs.Identity, encodeRoles(cs.Roles), cs.Method, cs.Source, micros(cs.CreatedAt), micros(cs.ExpiresAt)}}
}

func (s *Store) checkSession(cs *store.ConsoleSession) error {
	if cs.Hash == "" || cs.Serial == "" || cs.Method == "" || !cs.ExpiresAt.After(cs.CreatedAt) {
		return s.errorf("open a console session: hash, serial, method and an expiry after its start are required")
	}
	return nil
}

// RedeemConsoleLink implements store.Console: the link is marked used only
// while unused and unexpired, and the session is opened in the same
// transaction, so of two browsers racing with one link only one gets in.
func (s *Store) RedeemConsoleLink(ctx context.Context, linkHash string, cs *store.ConsoleSession, ev *store.Event) error {
	if err := s.checkSession(cs); err != nil {
		return err
	}
	at := micros(cs.CreatedAt)
	return s.guarded(ctx, "redeem a console link", ev,
		Guard{Want: 1, SQL: `UPDATE console_links SET used_at = ? WHERE hash = ? AND used_at = 0 AND expires_at > ?`, Args: []any{at, linkHash, at}},
		insertSession(cs))
}

// CreateConsoleSession implements store.Console.
func (s *Store) CreateConsoleSession(ctx context.Context, cs *store.ConsoleSession, ev *store.Event) error {
	if err := s.checkSession(cs); err != nil {
		return err
	}
	return s.guarded(ctx, "open a console session", ev, insertSession(cs))
}

const consoleSessionColumns = `hash, serial, identity, roles, method, source, created_at, expires_at, ended_at, end_reason`

func scanConsoleSession(scan scanFunc) (store.ConsoleSession, error) {
	var cs store.ConsoleSession
	var roles string
	var created, expires, ended int64
	if err := scan(&cs.Hash, &cs.Serial, &cs.Identity, &roles, &cs.Method, &cs.Source, &created, &expires, &ended, &cs.EndReason); err != nil {
		return cs, err
	}
	var err error
	if cs.Roles, err = decodeRoles(roles); err != nil {
		return cs, err
	}
	cs.CreatedAt, cs.ExpiresAt = fromMicros(created), fromMicros(expires)
	if ended != 0 {
		cs.EndedAt = fromMicros(ended)
	}
	return cs, nil
}

// ConsoleSession implements store.Console.
func (s *Store) ConsoleSession(ctx context.Context, hash string) (_ store.ConsoleSession, err error) {
	ctx, end := s.call(ctx, "read a console session", false)
	defer end(&err)
	cs, err := scanConsoleSession(s.read.QueryRow(ctx, s.d.rebind("SELECT "+consoleSessionColumns+" FROM console_sessions WHERE hash = ?"), hash).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return cs, s.errorf("console session: %w", store.ErrNotFound)
	case err != nil:
		return cs, s.errorf("read a console session: %w", err)
	}
	return cs, nil
}

// EndConsoleSession implements store.Console.
func (s *Store) EndConsoleSession(ctx context.Context, hash string, at time.Time, reason string, ev *store.Event) error {
	return s.guarded(ctx, "end a console session", ev, Guard{Want: 1,
		SQL:  `UPDATE console_sessions SET ended_at = ?, end_reason = ? WHERE hash = ? AND ended_at = 0`,
		Args: []any{micros(at), reason, hash}})
}

// LapsedConsoleSessions implements store.Console.
func (s *Store) LapsedConsoleSessions(ctx context.Context, at time.Time, limit int) (_ []store.ConsoleSession, err error) {
	ctx, end := s.call(ctx, "list lapsed console sessions", false)
	defer end(&err)
	n, err := limitOr(limit, 100)
	if err != nil {
		return nil, s.errorf("list lapsed console sessions: %w", err)
	}
	q := query{SQL: s.d.rebind(fmt.Sprintf("SELECT %s FROM console_sessions WHERE ended_at = 0 AND expires_at <= ? ORDER BY expires_at LIMIT %d",
		consoleSessionColumns, n)), Args: []any{micros(at)}}
	return list(ctx, s, "list lapsed console sessions", scanConsoleSession, q, nil)
}

// PurgeConsole implements store.Console.
func (s *Store) PurgeConsole(ctx context.Context, before time.Time) (err error) {
	ctx, end := s.call(ctx, "purge console links and sessions", true)
	defer end(&err)
	return inTx(ctx, s.write, &s.d, "purge console links and sessions", func(tx Conn) error {
		if _, err := tx.Exec(ctx, s.d.rebind(`DELETE FROM console_links WHERE expires_at < ?`), micros(before)); err != nil {
			return s.errorf("purge console links: %w", err)
		}
		if _, err := tx.Exec(ctx, s.d.rebind(`DELETE FROM console_sessions WHERE ended_at <> 0 AND ended_at < ?`), micros(before)); err != nil {
			return s.errorf("purge console sessions: %w", err)
		}
		return nil
	})
}

// limitOr is limit with def for zero, capped at maxLimit.
func limitOr(n, def int) (int, error) {
	if n == 0 {
		return def, nil
	}
	return limit(n)
}
