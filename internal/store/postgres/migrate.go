package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mica-pki/mica/internal/store/migrate"
)

// applyMigrations applies pending migrations in one transaction, holding
// a transaction-level advisory lock so that servers starting together
// migrate one at a time; the later ones find nothing to do.
func applyMigrations(ctx context.Context, pool *pgxpool.Pool) error {
	all, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("postgres: migrate: take the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at BIGINT  NOT NULL
		)`); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		rows, _ := tx.Query(ctx, "SELECT version FROM schema_migrations")
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return fmt.Errorf("postgres: migrate: read applied versions: %w", err)
		}
		pending, err := migrate.Pending(all, applied)
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		for _, m := range pending {
			// No arguments: the simple protocol runs a multi-statement file.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("postgres: migrate: apply %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.Version, m.Name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("postgres: migrate: record %s: %w", m.Name, err)
			}
		}
		return nil
	})
}
