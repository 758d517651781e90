package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// dialect is SQLite's SQL as the shared code needs to know it. There are
// no locks to take: the single writer connection serialises every write.
var dialect = sqlstore.Dialect{
	Name:        "sqlite",
	Placeholder: func(int) string { return "?" },
	IsUniqueViolation: func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "UNIQUE constraint")
	},
	Unanswered: "check that the disk holding the database is not full, frozen or failing, " +
		"and that no other process keeps the database file locked",
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// conn is a database/sql handle as a sqlstore.Conn. database/sql prepares
// and finalises a statement on every call, so the hot statements New hands
// Prepare are kept prepared.
type conn struct {
	q        querier
	prepared map[string]*sql.Stmt // filled before first use, only read after
}

var _ sqlstore.Preparer = (*conn)(nil)

// Prepare implements sqlstore.Preparer; db must be the *sql.DB of c.
func (c *conn) Prepare(ctx context.Context, query string) error {
	db, ok := c.q.(*sql.DB)
	if !ok {
		return errors.New("sqlite: statements are prepared on a database, not in a transaction")
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	if c.prepared == nil {
		c.prepared = map[string]*sql.Stmt{}
	}
	c.prepared[query] = st
	return nil
}

func (c *conn) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	var r *sql.Rows
	var err error
	if st := c.prepared[query]; st != nil {
		r, err = st.QueryContext(ctx, args...)
	} else {
		r, err = c.q.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	return rows{r}, nil
}

func (c *conn) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	if st := c.prepared[query]; st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.q.QueryRowContext(ctx, query, args...)
}

func (c *conn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// close closes the prepared statements.
func (c *conn) close() error {
	var errs []error
	for _, st := range c.prepared {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// rows is *sql.Rows as a sqlstore.Rows.
type rows struct{ *sql.Rows }

// Close closes the result set, as pgx.Rows.Close does: errors that matter
// are reported by Next and Err.
func (r rows) Close() { r.Rows.Close() }

// db is a *sql.DB as a sqlstore.DB.
type db struct {
	conn
	db *sql.DB
}

func newDB(d *sql.DB) *db { return &db{conn: conn{q: d}, db: d} }

// InSnapshot implements sqlstore.Reader. In WAL mode a transaction sees
// the database as of its first read; it is rolled back, having written
// nothing.
func (d *db) InSnapshot(ctx context.Context, fn func(tx sqlstore.Conn) error) error {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(&conn{q: tx})
}

// InTx implements sqlstore.DB. On the writer, transactions begin
// IMMEDIATE (the connection's _txlock), taking the write lock at once.
func (d *db) InTx(ctx context.Context, fn func(tx sqlstore.Conn) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(&conn{q: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
