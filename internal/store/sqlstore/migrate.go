package sqlstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The schema is one list of numbered migrations, applied from the top to
// the bottom, each exactly once, and recorded in schema_migrations. Each
// engine has its own copy of every migration in its own SQL, in
// migrations/<engine>/NNNN_description.sql; TestMigrationsAgree keeps the
// two copies the same schema.

//go:embed migrations
var migrationFiles embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations are the migrations of engine ("sqlite", "postgres"),
// ordered by version.
func Migrations(engine string) ([]Migration, error) {
	return loadMigrations(migrationFiles, path.Join("migrations", engine))
}

// loadMigrations returns the migrations in dir of fsys, ordered by
// version. It rejects files that are not named NNNN_description.sql and
// duplicate versions, so a mistake fails the build's tests, not a
// production start.
func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", dir, err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		if e.IsDir() || !ok || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("migrate: %s is not named NNNN_description.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migrate: %s does not start with a positive version number", name)
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrate: %s and %s share version %d", ms[i-1].Name, ms[i].Name, ms[i].Version)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("migrate: no migrations in %s", dir)
	}
	return ms, nil
}

// pending returns the migrations not in applied, or an error if the
// database has a version this binary does not know (it was migrated by a
// newer mica).
func pending(all []Migration, applied []int) ([]Migration, error) {
	known := make(map[int]bool, len(all))
	for _, m := range all {
		known[m.Version] = true
	}
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		if !known[v] {
			return nil, fmt.Errorf("migrate: database has schema version %d, unknown to this binary: run a mica at least as new as the one that migrated it", v)
		}
		done[v] = true
	}
	var out []Migration
	for _, m := range all {
		if !done[m.Version] {
			out = append(out, m)
		}
	}
	return out, nil
}

// Migrate brings the database on db up to date: it applies the engine's
// pending migrations in one transaction, then gives events recorded before
// the audit log existed their leaves. Engines run it at open, before New.
// It takes d.LockMigrations first, so that servers starting together
// migrate one at a time and the later ones find nothing to do.
func Migrate(ctx context.Context, db DB, d Dialect) error {
	known, err := Migrations(d.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Name, err)
	}
	record := d.rebind("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
	err = inTx(ctx, db, &d, "migrate", func(tx Conn) error {
		if d.LockMigrations != "" {
			if _, err := tx.Exec(ctx, d.LockMigrations); err != nil {
				return fmt.Errorf("%s: migrate: take the migration lock: %w", d.Name, err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at BIGINT  NOT NULL
		)`); err != nil {
			return fmt.Errorf("%s: migrate: %w", d.Name, err)
		}
		applied, err := queryAll(ctx, tx, "SELECT version FROM schema_migrations", nil, scanOne[int])
		if err != nil {
			return fmt.Errorf("%s: migrate: read applied versions: %w", d.Name, err)
		}
		todo, err := pending(known, applied)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		for _, m := range todo {
			// No arguments: a file of several statements runs as one
			// (pgx then uses the simple protocol).
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: migrate: apply %s: %w", d.Name, m.Name, err)
			}
			if _, err := tx.Exec(ctx, record, m.Version, m.Name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("%s: migrate: record %s: %w", d.Name, m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return backfillLeaves(ctx, db, &d)
}
