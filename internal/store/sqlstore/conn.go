package sqlstore

import (
	"context"
	"fmt"
	"strings"
)

// This file is how the shared code talks to an engine: the Dialect of
// its SQL, and the small Conn, DB and Reader interfaces over its driver.

// Dialect is what the shared code needs to know about an engine's SQL.
type Dialect struct {
	// Name is the engine's name ("sqlite", "postgres"): the first word of
	// every error, so that an operator knows which database said it.
	Name string
	// Placeholder renders the n-th (1-based) query parameter.
	Placeholder func(n int) string
	// IsUniqueViolation reports whether err is a unique constraint failing.
	IsUniqueViolation func(err error) bool
	// LockMigrations and LockEvents, when set, are run first in the
	// transaction that applies migrations, and in one that appends audit
	// leaves, so that servers sharing the database take turns. They are
	// empty for an engine whose single writer already serialises these.
	LockMigrations, LockEvents string
	// OnePool is set when the engine's reads and writes draw on one pool
	// of connections (PostgreSQL). A call then never holds one connection
	// while it waits for another, so that concurrent callers cannot take
	// every connection and wait for each other.
	OnePool bool
	// NotIndexed is written before a column in a condition that the
	// planner must not answer from an index on that column (SQLite: "+"),
	// so that it keeps a plan reading another index in the order a query
	// groups or lists by. Empty for a planner that weighs the choice from
	// statistics (PostgreSQL).
	NotIndexed string
	// Explain returns how the engine means to run query (see Plans), one
	// step a line.
	Explain func(ctx context.Context, c Conn, query string, args []any) ([]string, error)
	// Unanswered says what to check when the database does not answer a
	// call in time (see TimeoutError); it must name no host, user or
	// path, as it may reach unauthenticated callers.
	Unanswered string
	// PlanEach, when set, marks the arguments of a query so that the
	// engine plans it for their values every time it runs, for the
	// aggregate reads over a range of the inventory, whose best plan
	// depends on how much of it the range holds (see planEach).
	PlanEach func(args []any) []any
}

// planEach is args marked for a plan made for their values (PlanEach).
// PostgreSQL otherwise switches a prepared statement to a generic plan
// after five runs: for the expiry report's counts at a million
// certificates that plan read 570,000 rows through a bitmap and sorted
// them on disk, 2–5 s, where the plan for the values reads an index in
// order, 0.65 s.
func (d *Dialect) planEach(args []any) []any {
	if d.PlanEach == nil {
		return args
	}
	return d.PlanEach(args)
}

// rebind rewrites a statement written with '?' placeholders into the
// dialect's style. Statements in this package have no '?' inside
// literals, so every '?' is a parameter.
func (d *Dialect) rebind(query string) string {
	if d.Placeholder(1) == "?" {
		return query
	}
	var b strings.Builder
	n := 0
	for {
		i := strings.IndexByte(query, '?')
		if i < 0 {
			b.WriteString(query)
			return b.String()
		}
		n++
		b.WriteString(query[:i])
		b.WriteString(d.Placeholder(n))
		query = query[i+1:]
	}
}

// Row is one result row; *sql.Row and pgx.Row both fit.
type Row interface {
	// Scan reads the row's columns into dest. A query that found no row
	// reports an error matching sql.ErrNoRows (pgx.ErrNoRows does).
	Scan(dest ...any) error
}

// Rows iterates a result set; pgx.Rows fits as it is.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Conn runs statements on a connection pool or in a transaction. Query
// and QueryRow take parameters in the dialect's placeholder style.
type Conn interface {
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
	// Exec runs a statement and reports how many rows it changed.
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
}

// DB is a Conn that can also run a transaction.
type DB interface {
	Conn
	// InTx runs fn in one transaction and commits it if fn returns nil;
	// otherwise it rolls back and returns fn's error.
	InTx(ctx context.Context, fn func(tx Conn) error) error
}

// Reader is a Conn that can also run queries on one snapshot of the
// database, for a result made of several queries that must agree.
type Reader interface {
	Conn
	// InSnapshot runs fn in a read-only transaction that sees one
	// snapshot of the database, and ends it. The snapshot is taken by the
	// transaction's first query, not when it begins.
	InSnapshot(ctx context.Context, fn func(tx Conn) error) error
}

// Preparer is an optional ability of a Conn whose driver does not keep
// prepared statements by itself (database/sql does not; pgx does). New
// hands it the statements that run on every issuance, to prepare once;
// the Conn then runs those through the prepared statement.
type Preparer interface {
	Prepare(ctx context.Context, query string) error
}

// scanFunc is the Scan method of a Row or Rows.
type scanFunc = func(dest ...any) error

// queryEach runs query on c and calls fn with every row's Scan.
func queryEach(ctx context.Context, c Conn, query string, args []any, fn func(scan scanFunc) error) error {
	rows, err := c.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// queryAll runs query on c and reads every row with scan.
func queryAll[T any](ctx context.Context, c Conn, query string, args []any, scan func(scanFunc) (T, error)) ([]T, error) {
	var out []T
	err := queryEach(ctx, c, query, args, func(sc scanFunc) error {
		v, err := scan(sc)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// list runs q, or fails with buildErr from building it, on s's readers and
// reads every row with scan; what names the listing in errors.
func list[T any](ctx context.Context, s *Store, what string, scan func(scanFunc) (T, error), q query, buildErr error) ([]T, error) {
	if buildErr != nil {
		return nil, s.errorf("%s: %w", what, buildErr)
	}
	out, err := queryAll(ctx, s.read, q.SQL, q.Args, scan)
	if err != nil {
		return nil, s.errorf("%s: %w", what, err)
	}
	return out, nil
}

// inTx runs fn in a transaction on db. Errors from fn are returned as they
// are (they say what failed); errors of the transaction itself (begin,
// commit) are prefixed with the engine's name and what.
func inTx(ctx context.Context, db DB, d *Dialect, what string, fn func(tx Conn) error) error {
	var fnErr error
	err := db.InTx(ctx, func(tx Conn) error {
		fnErr = fn(tx)
		return fnErr
	})
	if err != nil && fnErr == nil {
		return fmt.Errorf("%s: %s: %w", d.Name, what, err)
	}
	return err
}
