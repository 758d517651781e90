package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// Advisory lock keys, fixed so that every mica server agrees on them.
// The high half spells "mica".
const (
	migrationLockKey int64 = 0x6d696361<<32 | 1
	eventLockKey     int64 = 0x6d696361<<32 | 2
)

// dialect is PostgreSQL's SQL as the shared code needs to know it.
var dialect = sqlstore.Dialect{
	Name:              "postgres",
	Placeholder:       func(n int) string { return "$" + strconv.Itoa(n) },
	IsUniqueViolation: isUniqueViolation,
	LockMigrations:    advisoryLock(migrationLockKey),
	LockEvents:        advisoryLock(eventLockKey),
	OnePool:           true,
	Explain: func(ctx context.Context, c sqlstore.Conn, query string, args []any) ([]string, error) {
		return sqlstore.ExplainLines(ctx, c, "EXPLAIN ", query, args)
	},
	Unanswered: "check that PostgreSQL is up and reachable and that its disk is not full or frozen",
	// An unnamed statement, planned at each run for its parameters.
	PlanEach: func(args []any) []any { return append([]any{pgx.QueryExecModeExec}, args...) },
}

// advisoryLock is a statement that holds the advisory lock key until its
// transaction ends.
func advisoryLock(key int64) string {
	return fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", key)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// querier is what *pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// conn is a pgx pool or transaction as a sqlstore.Conn. pgx keeps
// prepared statements per connection by itself.
type conn struct{ q querier }

func (c conn) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return c.q.Query(ctx, query, args...)
}

func (c conn) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return c.q.QueryRow(ctx, query, args...)
}

func (c conn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := c.q.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

// pool is a pgx pool as a sqlstore.DB.
type pool struct {
	conn
	pool *pgxpool.Pool
}

func newPool(p *pgxpool.Pool) pool { return pool{conn: conn{q: p}, pool: p} }

// InSnapshot implements sqlstore.Reader with a read-only, repeatable-read
// transaction.
func (p pool) InSnapshot(ctx context.Context, fn func(tx sqlstore.Conn) error) error {
	tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return fn(conn{q: tx})
}

// InTx implements sqlstore.DB.
func (p pool) InTx(ctx context.Context, fn func(tx sqlstore.Conn) error) error {
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return fn(conn{q: tx}) })
}
