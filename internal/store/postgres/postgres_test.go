package postgres

import (
	"context"
	"os"
	"testing"

	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlstore"
	"github.com/mica-pki/mica/internal/store/storetest"
)

// cluster is the one PostgreSQL server of this test binary.
var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.PerTest(cluster.Database, Open))
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	t.Run("ConcurrentMigrations", func(t *testing.T) {
		url := cluster.Database(t)
		storetest.OpenTogether(t, 8, url, Open)
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if embedded, err := sqlstore.Migrations(dialect.Name); err != nil || n != len(embedded) {
			t.Errorf("schema_migrations has %d rows, want one per embedded migration (%d, %v)", n, len(embedded), err)
		}
	})
	t.Run("SessionSettings", func(t *testing.T) { // durable commits; no JIT
		s, err := Open(ctx, cluster.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, tc := range []struct{ setting, want string }{
			{"synchronous_commit", "on"},
			{"fsync", "on"},
			{"jit", "off"},
		} {
			var got string
			if err := s.pool.QueryRow(ctx, "SELECT current_setting($1)", tc.setting).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("%s = %s, want %s", tc.setting, got, tc.want)
			}
		}
	})
	t.Run("BadURL", func(t *testing.T) {
		if _, err := Open(ctx, "postgres://127.0.0.1:1/none?connect_timeout=2"); err == nil {
			t.Error("Open succeeded against a closed port")
		}
	})
}

func BenchmarkRecordIssuance(b *testing.B) {
	storetest.BenchmarkRecordIssuance(b, storetest.Fresh(cluster.Database, Open))
}

func BenchmarkIsDenied(b *testing.B) {
	storetest.BenchmarkIsDenied(b, storetest.Fresh(cluster.Database, Open))
}

func BenchmarkRenewal(b *testing.B) {
	storetest.BenchmarkRenewal(b, storetest.Fresh(cluster.Database, Open))
}
