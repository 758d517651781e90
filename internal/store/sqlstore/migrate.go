package sqlstore

import (
	"context"
	"fmt"
	"io/fs"
	"time"

	"github.com/mica-pki/mica/internal/store/migrate"
)

// Migrate applies the pending migrations in dir of fsys in one
// transaction, recording each in schema_migrations. It runs
// d.LockMigrations first, so that servers starting together migrate one
// at a time and the later ones find nothing to do.
func Migrate(ctx context.Context, db DB, d Dialect, fsys fs.FS, dir string) error {
	known, err := migrate.Load(fsys, dir)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Name, err)
	}
	record := d.rebind("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
	return inTx(ctx, db, &d, "migrate", func(tx Conn) error {
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
		pending, err := migrate.Pending(known, applied)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		for _, m := range pending {
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
}
