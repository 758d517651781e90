package auditlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// engine opens a store on a database of its own and runs SQL on that
// database behind the store's back, as someone tampering with it would.
type engine struct {
	name string
	open func(t *testing.T) (st store.Store, exec func(query string))
}

var engines = []engine{
	{"sqlite", func(t *testing.T) (store.Store, func(string)) {
		path := filepath.Join(t.TempDir(), "mica.db")
		st, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return st, func(q string) {
			t.Helper()
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}},
	{"postgres", func(t *testing.T) (store.Store, func(string)) {
		url := cluster.Database(t)
		st, err := postgres.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, func(q string) {
			t.Helper()
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}},
}

// TestDeletedLeavesNamed deletes leaves from a real store's log after a
// checkpoint covered them, lets the server go on recording events (as it
// does when it restarts: the start-up itself records some), and checks
// that the verifier names the first deleted leaf, at the end of the log
// and in the middle, on both engines; and that no server signs a
// checkpoint over the damaged log.
func TestDeletedLeavesNamed(t *testing.T) {
	const n = 40
	tests := []struct {
		name       string
		delete     string // WHERE clause on events
		appendMore int    // events recorded after the deletion
		want       int64
	}{
		{"End", "leaf_index >= 29", 0, 29},
		{"EndThenNewEvents", "leaf_index >= 29", 2, 29},
		{"Middle", "leaf_index IN (17, 18)", 0, 17},
		{"MiddleThenNewEvents", "leaf_index IN (17, 18)", 2, 17},
	}
	for _, e := range engines {
		for _, tc := range tests {
			t.Run(e.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				st, exec := e.open(t)
				signer := newSigner(t)
				recordEvents(t, st, 0, n)
				l, err := New(Config{Store: st, Signer: signer})
				if err != nil {
					t.Fatal(err)
				}
				if err := l.RunOnce(ctx); err != nil {
					t.Fatal(err)
				}
				exec("DELETE FROM events WHERE " + tc.delete)
				recordEvents(t, st, n, tc.appendMore)

				err = verifyStoreErr(t, st, signer.VerifierKey())
				var te *TamperError
				if !errors.As(err, &te) {
					t.Fatalf("verify = %v, want a TamperError", err)
				}
				if te.Index != tc.want || !strings.Contains(err.Error(), fmt.Sprintf("leaf %d", tc.want)) &&
					!strings.Contains(err.Error(), fmt.Sprintf("from %d on", tc.want)) {
					t.Errorf("verify named leaf %d: %v; want the first deleted leaf, %d", te.Index, err, tc.want)
				}

				// A server started on the damaged log must not sign over it.
				restarted, err := New(Config{Store: st, Signer: signer})
				if err != nil {
					t.Fatal(err)
				}
				recordEvents(t, st, n+tc.appendMore, n) // enough to pass the last checkpoint
				before, err := st.LatestCheckpoint(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := restarted.RunOnce(ctx); err == nil || !strings.Contains(err.Error(), "audit verify") {
					t.Errorf("RunOnce on a log that no longer extends its checkpoint = %v, want a refusal that says to run mica audit verify", err)
				}
				if after, err := st.LatestCheckpoint(ctx); err != nil || after.Size != before.Size {
					t.Errorf("a checkpoint of size %d was signed over the damaged log (%v)", after.Size, err)
				}
			})
		}
	}
}

func recordEvents(t *testing.T, st store.Store, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		ev := store.Event{Time: t0, Actor: "system", Action: store.ActionTokenCreated, Identity: fmt.Sprintf("spiffe://example.test/%d", i), Outcome: "ok"}
		if err := st.RecordEvent(context.Background(), &ev); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyStoreErr verifies the log kept in st as mica audit verify does,
// and returns how it ended.
func verifyStoreErr(t *testing.T, st store.Store, vkey string) error {
	t.Helper()
	ctx := context.Background()
	cps, err := st.Checkpoints(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var notes [][]byte
	for _, c := range cps {
		notes = append(notes, c.Note)
	}
	v, err := NewVerification(vkey, notes, nil)
	if err != nil {
		t.Fatal(err)
	}
	const page = 7
	for start := int64(0); ; {
		leaves, err := st.Leaves(ctx, start, page)
		if err != nil {
			t.Fatal(err)
		}
		for i := range leaves {
			if err := v.Add(&leaves[i]); err != nil {
				return err
			}
		}
		start += int64(len(leaves))
		if len(leaves) < page {
			break
		}
	}
	_, err = v.Finish()
	return err
}
