package sqlstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/store/migrate"
)

// TestMigrationsAgree keeps the engines' schemas one schema: each engine
// carries its own migration files, in its own SQL, and they must be the
// same migrations, line for line, but for the types and the sequence
// column that the dialects spell differently.
func TestMigrationsAgree(t *testing.T) {
	lite, err := migrate.Load(os.DirFS(filepath.Join("..", "sqlite")), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrate.Load(os.DirFS(filepath.Join("..", "postgres")), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d: add the missing ones to the other engine", len(lite), len(pg))
	}
	// What SQLite writes → what PostgreSQL writes, after spaces are squeezed.
	spelling := strings.NewReplacer(
		"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		"BLOB", "BYTEA",
	)
	for i := range lite {
		l, p := lite[i], pg[i]
		if l.Name != p.Name {
			t.Errorf("migration %d is %s on sqlite, %s on postgres", i, l.Name, p.Name)
			continue
		}
		ll, pl := strings.Split(l.SQL, "\n"), strings.Split(p.SQL, "\n")
		if len(ll) != len(pl) {
			t.Errorf("%s: %d lines on sqlite, %d on postgres", l.Name, len(ll), len(pl))
			continue
		}
		for j := range ll {
			if got, want := spelling.Replace(squeeze(ll[j])), squeeze(pl[j]); got != want {
				t.Errorf("%s line %d differs beyond dialect:\n  sqlite:   %s\n  postgres: %s", l.Name, j+1, ll[j], pl[j])
			}
		}
	}
}

// squeeze collapses runs of spaces, which only align columns.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }
