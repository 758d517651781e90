package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/auditlog/leaf"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlstore"
	"github.com/mica-pki/mica/internal/store/storetest"
)

// newDatabase is a database file of its own for t.
func newDatabase(t testing.TB) string { return filepath.Join(t.TempDir(), "mica.db") }

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.PerTest(newDatabase, Open))
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	t.Run("FileModes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "mica.db")
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.RecordEvent(ctx, &store.Event{Time: time.Now(), Action: store.ActionPolicyLoaded}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode().Perm(); mode != 0o600 {
				t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
			}
		}
	})
	t.Run("LooseExistingFileTightened", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mica.db")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %o, want 600", fi.Mode().Perm())
		}
	})
	t.Run("Pragmas", func(t *testing.T) {
		s, err := Open(ctx, filepath.Join(t.TempDir(), "mica.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		tests := []struct {
			pragma string
			want   string
		}{
			{"journal_mode", "wal"},
			{"synchronous", "2"}, // FULL
			{"foreign_keys", "1"},
			{"busy_timeout", "10000"},
			{"wal_autocheckpoint", "1000"},
		}
		for _, tc := range tests {
			for _, db := range []struct {
				name string
				q    func(string) (string, error)
			}{{"writer", pragma(s.writer)}, {"reader", pragma(s.readers)}} {
				got, err := db.q(tc.pragma)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("%s: PRAGMA %s = %s, want %s", db.name, tc.pragma, got, tc.want)
				}
			}
		}
	})
	t.Run("MigrationsIdempotent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mica.db")
		for range 3 {
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := s.writer.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if embedded, err := sqlstore.Migrations(dialect.Name); err != nil || n != len(embedded) {
				t.Errorf("schema_migrations has %d rows, want one per embedded migration (%d, %v)", n, len(embedded), err)
			}
			s.Close()
		}
	})
	t.Run("ConcurrentOpen", func(t *testing.T) {
		storetest.OpenTogether(t, 4, newDatabase(t), Open)
	})
	t.Run("HotLookupsPrepared", func(t *testing.T) {
		// database/sql would prepare and finalise them on every issuance
		// and every authenticated request.
		s, err := Open(ctx, newDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var deny, cert, status int
		for q := range s.read.prepared {
			switch {
			case strings.Contains(q, "denied_identities"):
				deny++
			case strings.HasPrefix(q, "SELECT status, revoked_at, revocation_reason FROM certificates WHERE serial = ?"):
				status++
			case strings.Contains(q, "FROM certificates WHERE serial = ?") && strings.Contains(q, "NULL"):
				cert++ // without the DER
			default:
				t.Errorf("unexpected prepared reader statement %q", q)
			}
		}
		if deny != 1 || cert != 1 || status != 1 {
			t.Errorf("prepared: %d deny-list, %d certificate and %d status lookups, want one of each", deny, cert, status)
		}
	})
	t.Run("BadPath", func(t *testing.T) {
		if _, err := Open(ctx, "x.db?mode=memory"); err == nil {
			t.Error("Open accepted a path with a query string")
		}
	})
}

func pragma(db *sql.DB) func(string) (string, error) {
	return func(name string) (string, error) {
		var v string
		err := db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v)
		return v, err
	}
}

func BenchmarkRecordIssuance(b *testing.B) {
	storetest.BenchmarkRecordIssuance(b, storetest.Fresh(newDatabase, Open))
}

func BenchmarkIsDenied(b *testing.B) {
	storetest.BenchmarkIsDenied(b, storetest.Fresh(newDatabase, Open))
}

// TestBackfillLeaves opens a database whose events predate the audit log
// (no leaf index, no hash): they become leaves 0.. in seq order.
func TestBackfillLeaves(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mica.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ev := &store.Event{Time: time.Unix(int64(1000+i), 0), Actor: "system", Action: store.ActionPolicyLoaded, Outcome: "ok"}
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.writer.ExecContext(ctx, "UPDATE events SET leaf_index = NULL, leaf_hash = NULL"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	leaves, err := s.Leaves(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaves) != 5 {
		t.Fatalf("%d leaves after backfill, want 5", len(leaves))
	}
	for i, ev := range leaves {
		if ev.LeafIndex != int64(i) || !bytes.Equal(ev.LeafHash, leaf.Hash(&ev)) || (i > 0 && ev.Seq <= leaves[i-1].Seq) {
			t.Errorf("leaf %d: index %d, seq %d, hash ok %v", i, ev.LeafIndex, ev.Seq, bytes.Equal(ev.LeafHash, leaf.Hash(&ev)))
		}
	}
}

func BenchmarkRenewal(b *testing.B) {
	storetest.BenchmarkRenewal(b, storetest.Fresh(newDatabase, Open))
}
