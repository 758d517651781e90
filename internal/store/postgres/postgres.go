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

// Open connects to the database at url (a postgres:// URL or key=value
// connection string) and applies any pending schema migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse connection string: %w", err)
	}
	// A commit is acknowledged only once it is durable, whatever the
	// server's or role's default says.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "mica"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	db := newPool(pool)
	if err := sqlstore.Migrate(ctx, db, dialect); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{pool: pool}
	s.Store, err = sqlstore.New(ctx, sqlstore.Config{Dialect: dialect, Read: db, Write: db, Commit: s.commit})
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
