package postgres

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/migrate"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/storetest"
)

// cluster is the one PostgreSQL server of this test binary.
var cluster pgtest.Cluster

func TestMain(m *testing.M) {
	code := m.Run()
	if err := cluster.Stop(); err != nil {
		println("postgres: stop test cluster:", err.Error())
		code = 1
	}
	os.Exit(code)
}

// opener gives each test its own database; calls for the same test open
// that database again.
func opener() storetest.Opener {
	var mu sync.Mutex
	urls := map[*testing.T]string{}
	return func(t *testing.T) store.Store {
		t.Helper()
		mu.Lock()
		url, ok := urls[t]
		if !ok {
			url = cluster.Database(t)
			urls[t] = url
		}
		mu.Unlock()
		s, err := Open(context.Background(), url)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, opener())
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	t.Run("ConcurrentMigrations", func(t *testing.T) {
		url := cluster.Database(t)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				s, err := Open(ctx, url)
				if err != nil {
					t.Error(err)
					return
				}
				s.Close()
			})
		}
		wg.Wait()
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := embeddedMigrations(t); n != want {
			t.Errorf("schema_migrations has %d rows, want %d (one per embedded migration)", n, want)
		}
	})
	t.Run("DurableCommits", func(t *testing.T) {
		s, err := Open(ctx, cluster.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, tc := range []struct{ setting, want string }{
			{"synchronous_commit", "on"},
			{"fsync", "on"},
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
	storetest.BenchmarkRecordIssuance(b, func(b *testing.B) store.Store {
		s, err := Open(context.Background(), cluster.Database(b))
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}

// embeddedMigrations is how many migrations this binary carries.
func embeddedMigrations(t *testing.T) int {
	t.Helper()
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}
