// Package postgres is the store engine for more than one server: store.Store
// on PostgreSQL through a pgx connection pool. Several mica servers may
// share one database: schema migrations are serialized by an advisory
// lock, event sequence numbers come from the database, and batch
// transactions take a second advisory lock so that events commit in
// sequence order across servers. The schema, the statements and every
// read live in store/sqlstore; this package keeps only what is
// PostgreSQL's own: the pool and its settings, the writing of a batch as
// one pipeline (commit in write.go), and LISTEN/NOTIFY for revocations
// (revocation.go). Start with Open.
package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// Store is the PostgreSQL engine: the shared SQL of sqlstore.Store on a
// pgx pool. Its methods are safe for concurrent use.
type Store struct {
	*sqlstore.Store
	pool *pgxpool.Pool

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Config says which database to open and how.
type Config struct {
	// URL is a postgres:// URL or a key=value connection string.
	URL string
	// Timeout bounds every call of the store (a query, a write and its
	// wait for the group commit, a batch's transaction) and the first
	// connection at open. Zero means store.DefaultTimeout.
	Timeout time.Duration
}

// Open connects to the database at url (a postgres:// URL or key=value
// connection string) and applies any pending schema migrations. It is
// OpenConfig with the default settings.
func Open(ctx context.Context, url string) (*Store, error) {
	return OpenConfig(ctx, Config{URL: url})
}

// OpenConfig opens the database cfg names, as Open does.
func OpenConfig(ctx context.Context, c Config) (*Store, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = store.DefaultTimeout
	}
	cfg, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse connection string: %w", err)
	}
	// A commit is acknowledged only once it is durable, whatever the
	// server's or role's default says.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "mica"
	}
	// Compiling a query to machine code (JIT) pays only for long analytic
	// queries; mica's longest, the expiry report's counts over a million
	// certificates, took 830 ms with it and 625 ms without (EXPLAIN
	// ANALYZE, PostgreSQL 15). A connection string's own setting wins.
	if cfg.ConnConfig.RuntimeParams["jit"] == "" {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	// A server that accepts the connection and then says nothing (frozen,
	// or its disk stalled) must not hang the start.
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	err = pool.Ping(pingCtx)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && pingCtx.Err() != nil:
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d: the server did not answer within %s: %s",
			cfg.ConnConfig.Host, cfg.ConnConfig.Port, timeout, dialect.Unanswered)
	case err != nil:
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	db := newPool(pool)
	if err := sqlstore.Migrate(ctx, db, dialect); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{pool: pool}
	s.Store, err = sqlstore.New(ctx, sqlstore.Config{Dialect: dialect, Read: db, Write: db, Commit: s.commit, Timeout: timeout})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close commits every write already queued, then closes the pool.
// Calling it again does nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.StopWrites()
		s.pool.Close()
	})
	return nil
}

// Analyze vacuums the inventory and the audit log and gathers the
// planner's statistics now, as autovacuum does on its own after enough
// writes: for right after a bulk load, when the planner would otherwise
// plan without statistics and without the visibility map that lets it
// answer from an index alone.
func (s *Store) Analyze(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "VACUUM (ANALYZE) certificates, events"); err != nil {
		return fmt.Errorf("postgres: vacuum and analyze: %w", err)
	}
	return nil
}
