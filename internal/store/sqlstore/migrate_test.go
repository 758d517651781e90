package sqlstore

import (
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []int
		wantErr bool
	}{
		{"Ordered", fstest.MapFS{"m/0002_b.sql": sql, "m/0001_a.sql": sql, "m/0010_c.sql": sql}, []int{1, 2, 10}, false},
		{"Empty", fstest.MapFS{"m/.keep": sql}, nil, true},
		{"NoNumber", fstest.MapFS{"m/init.sql": sql}, nil, true},
		{"NotSQL", fstest.MapFS{"m/0001_a.txt": sql}, nil, true},
		{"DuplicateVersion", fstest.MapFS{"m/0001_a.sql": sql, "m/1_b.sql": sql}, nil, true},
		{"ZeroVersion", fstest.MapFS{"m/0000_a.sql": sql}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := loadMigrations(tc.files, "m")
			if (err != nil) != tc.wantErr {
				t.Fatalf("Load error = %v, want error %v", err, tc.wantErr)
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.Version)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("versions %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("versions %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestPending(t *testing.T) {
	all := []Migration{{Version: 1}, {Version: 2}, {Version: 3}}
	tests := []struct {
		name    string
		applied []int
		want    int
		wantErr bool
	}{
		{"Fresh", nil, 3, false},
		{"Partial", []int{1}, 2, false},
		{"Current", []int{1, 2, 3}, 0, false},
		{"NewerDatabase", []int{1, 2, 3, 4}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pending(all, tc.applied)
			if (err != nil) != tc.wantErr || len(p) != tc.want {
				t.Fatalf("Pending = %d, %v; want %d, error %v", len(p), err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestMigrationsAgree keeps the engines' schemas one schema: each engine
// carries its own migration files, in its own SQL, and they must be the
// same migrations, line for line, but for the types and the sequence
// column that the dialects spell differently.
func TestMigrationsAgree(t *testing.T) {
	lite, err := Migrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := Migrations("postgres")
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

// TestNoMigrationsOutsideThisPackage guards the move of the migrations
// into this package: a migration file left in an engine's old directory
// would be embedded by nobody and silently never applied.
func TestNoMigrationsOutsideThisPackage(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		old := filepath.Join("..", engine, "migrations")
		if files, _ := filepath.Glob(filepath.Join(old, "*.sql")); len(files) > 0 {
			t.Errorf("%s holds %s: move them to migrations/%s in this package, where they are embedded and applied", old, strings.Join(files, ", "), engine)
		}
	}
}
