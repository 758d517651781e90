// Package enginetest runs a test once on each store engine: the embedded
// SQLite in a temporary directory, and PostgreSQL (a fresh database on the
// test binary's pgtest cluster), which pgtest skips under -short, so the
// unit layer runs on SQLite alone. Packages above the store (authority,
// api) use it to hold their promises on both engines.
package enginetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// Each runs fn as the subtests "sqlite" and "postgres", each with a new,
// empty store that is closed when the subtest ends.
func Each(t *testing.T, cluster *pgtest.Cluster, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := postgres.Open(context.Background(), cluster.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}
