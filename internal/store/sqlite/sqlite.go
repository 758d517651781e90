// Package sqlite is the embedded store engine: store.Store on one SQLite
// file in WAL mode with synchronous=FULL, so every commit is durable. One
// writer connection, fed by a group committer (store/groupcommit), writes
// many callers' records per transaction and fsync; a pool of read-only
// connections serves queries alongside it. The schema, the statements and
// every read live in store/sqlstore; this package keeps only what is
// SQLite's own: the connections, their pragmas and file modes, and the
// writing of a batch on the single writer (commit in write.go). Start
// with Open.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlstore"

	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeoutMS bounds how long a connection waits for a lock held by
// another process opening the same file before failing.
const busyTimeoutMS = 10000

// Store is the SQLite engine: the shared SQL of sqlstore.Store on a
// single writer and a pool of readers. Its methods are safe for
// concurrent use.
type Store struct {
	*sqlstore.Store
	path    string
	writer  *sql.DB // exactly one connection: SQLite allows one writer
	readers *sql.DB
	read    *db // readers, with the statements sqlstore keeps prepared
	stmts   writeStmts

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Config says which database file to open and how.
type Config struct {
	// Path is the database file; it is created, readable and writable by
	// the owner only, if missing.
	Path string
	// Timeout bounds every call of the store: a query, a write and its
	// wait for the group commit, a batch's transaction. Zero means
	// store.DefaultTimeout.
	Timeout time.Duration
}

// Open opens (creating if needed) the database file at path, readable and
// writable by the owner only, and applies any pending schema migrations.
// It is OpenConfig with the default settings.
func Open(ctx context.Context, path string) (*Store, error) {
	return OpenConfig(ctx, Config{Path: path})
}

// OpenConfig opens the database cfg names, as Open does.
func OpenConfig(ctx context.Context, cfg Config) (*Store, error) {
	path := cfg.Path
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: database path %q must be a plain file path without '?' or '#'", path)
	}
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	s := &Store{path: path}
	if err := s.openWriter(ctx); err != nil {
		return nil, err
	}
	if err := s.setUp(ctx, cfg.Timeout); err != nil {
		s.closeHandles()
		return nil, err
	}
	return s, nil
}

// setUp migrates the database opened by openWriter, prepares the writer's
// statements, opens the readers and starts the shared store on them.
func (s *Store) setUp(ctx context.Context, timeout time.Duration) error {
	write := newDB(s.writer)
	if err := sqlstore.Migrate(ctx, write, dialect); err != nil {
		return err
	}
	// The -wal and -shm files exist now; SQLite copies the database file's
	// mode onto them, but a file left by an earlier run may be looser.
	if err := chmodPrivate(s.path); err != nil {
		return err
	}
	if err := s.stmts.prepare(ctx, s.writer); err != nil {
		return err
	}
	var err error
	if s.readers, err = openDB(s.path, "&_pragma=query_only(1)"); err != nil {
		return err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.readers.SetMaxOpenConns(n)
	s.readers.SetMaxIdleConns(n)
	s.read = newDB(s.readers)
	s.Store, err = sqlstore.New(ctx, sqlstore.Config{Dialect: dialect, Read: s.read, Write: write, Commit: s.commit, Timeout: timeout})
	return err
}

// closeHandles closes the statements and connections that are open.
func (s *Store) closeHandles() error {
	s.stmts.close()
	var errs []error
	if s.read != nil {
		errs = append(errs, s.read.close())
	}
	if s.readers != nil {
		errs = append(errs, s.readers.Close())
	}
	return errors.Join(append(errs, s.writer.Close())...)
}

func openDB(path, extra string) (*sql.DB, error) {
	// synchronous=FULL makes each WAL commit fsync before it returns: the
	// durability the issuance path promises. Never lower it.
	dsn := path + fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)", busyTimeoutMS) + extra
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// openWriter opens the single writer connection and checks its pragmas.
// Switching a new database to WAL takes an exclusive lock, and SQLite
// answers a second process doing the same at the same moment with
// SQLITE_BUSY without waiting; such a start is retried for a few seconds.
func (s *Store) openWriter(ctx context.Context) error {
	const attempts = 50
	for i := 1; ; i++ {
		// The writer copies the WAL back into the database file itself,
		// inside the commit that takes the WAL past wal_autocheckpoint
		// pages, and every write queued behind that commit waits for it.
		// SQLite's default of 1,000 pages keeps each such wait to a few
		// milliseconds; at 16,384 they were the slowest renewals under
		// load, for no saving in CPU (`mica bench renew --spawn`, 64 in
		// flight, median of 4 interleaved runs: p99 60 ms at 16,384, 48 ms
		// at 1,000; 42–49 ms with no checkpoint at all). A checkpointer on
		// a connection of its own, tried instead, cost more CPU and gained
		// nothing: it competed with the writer for the same disk and cores.
		//
		// The writer's page cache is 16 MiB. A b-tree split that reorders
		// its new pages parks one under the lock-byte page's number (page
		// 262,145 with 4 KiB pages), and the commit after it then walks
		// the whole cache to drop pages past the end of a database smaller
		// than 1 GiB. With
		// 64 MiB that walk alone was 2.4% of the server's CPU in a renewal
		// benchmark (`mica bench renew --spawn`, 64 in flight, 5
		// interleaved runs at load 2.5–3.7: median 0.513 ms per renewal
		// at 64 MiB, 0.459 ms at 16 MiB, 0.461 ms at 8 MiB). With a
		// million certificates (no walk: the database is past 1 GiB) 16
		// MiB and 64 MiB were within noise of each other.
		w, err := openDB(s.path, "&_pragma=journal_mode(WAL)&_pragma=cache_size(-16384)&_pragma=wal_autocheckpoint(1000)&_pragma=temp_store(MEMORY)&_txlock=immediate")
		if err != nil {
			return err
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		w.SetConnMaxIdleTime(0)
		s.writer = w
		err = s.checkWriter(ctx)
		if err == nil {
			return nil
		}
		w.Close()
		if !isBusy(err) || i == attempts {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i) * 10 * time.Millisecond):
		}
	}
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// checkWriter confirms the pragmas took effect: a file on a filesystem
// without WAL support would otherwise silently fall back.
func (s *Store) checkWriter(ctx context.Context) error {
	var mode string
	if err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("sqlite: %s is in journal mode %q, not wal: put the database on a local filesystem", s.path, mode)
	}
	var sync int
	if err := s.writer.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	if sync != 2 {
		return fmt.Errorf("sqlite: %s has synchronous=%d, want 2 (FULL)", s.path, sync)
	}
	// A statement that fires a trigger or changes several rows (a
	// revocation, say) runs under a statement journal, and so did every
	// certificate insert before migration 0018. With temp files on disk
	// that journal spilled to a file (then about a sixth of a renewal's
	// CPU in write(2) calls); in memory it is a copy.
	var temp int
	if err := s.writer.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&temp); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	if temp != 2 {
		return fmt.Errorf("sqlite: %s has temp_store=%d, want 2 (MEMORY)", s.path, temp)
	}
	return nil
}

func createPrivate(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sqlite: create the directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sqlite: create %s: %w", path, err)
	}
	return chmodPrivate(path)
}

// chmodPrivate gives the database and its WAL files mode 0600: the
// inventory and the token ledger are nobody else's business.
func chmodPrivate(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		err := os.Chmod(p, 0o600)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sqlite: restrict %s to its owner: %w", p, err)
		}
	}
	return nil
}

// Close commits every write already queued, then closes the database.
// Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.StopWrites(), s.closeHandles())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("sqlite: close %s: %w", s.path, s.closeErr)
		}
	})
	return s.closeErr
}
