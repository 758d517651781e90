package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// An identity's live certificates (the console's certificate page asks
// for them) are found through the identity index: without statistics
// SQLite preferred the (status, not_after) index and scanned every live
// certificate, 30 s at half a million on a busy machine.
func TestIdentityListUsesIdentityIndex(t *testing.T) {
	db := emptyDatabase(t)
	for _, st := range []store.Status{store.StatusActive, store.StatusRevoked, ""} {
		plan := explain(t, db, store.Filter{Identity: "spiffe://example.org/a", Status: st, Now: time.Now(), Limit: 10})
		if !strings.Contains(plan, "USING INDEX certificates_identity") {
			t.Errorf("status %q: the plan is %q, want the identity index", st, plan)
		}
	}
}

// emptyDatabase is a new database with every migration, opened read-only
// to explain queries on.
func emptyDatabase(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mica.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Every filter the API lists by (identity, profile, status, expiry
// window, alone and together), on a page read after a cursor's place,
// reads an index in the list's order from that place: no table scan and
// no sort of everything the page is cut from, whatever the depth.
func TestCursorPagesReadAnIndexInOrder(t *testing.T) {
	db := emptyDatabase(t)
	now := time.Now()
	for _, identity := range []string{"", "spiffe://example.org/a"} {
		for _, profile := range []string{"", "web"} {
			for _, status := range []store.Status{"", store.StatusActive, store.StatusRevoked, store.StatusExpired} {
				for _, within := range []time.Duration{0, 7 * 24 * time.Hour} {
					// A place before now and one after: the active filter
					// writes its bound differently for each.
					for _, at := range []time.Duration{-time.Hour, time.Hour} {
						f := store.Filter{Identity: identity, Profile: profile, Status: status, Now: now, Limit: 1001,
							After: store.Position{NotAfter: now.Add(at), Serial: "1a2b"}}
						if within > 0 {
							f.ExpiresBefore = now.Add(within)
						}
						name := fmt.Sprintf("identity %q, profile %q, status %q, within %s, after now%+v", identity, profile, status, within, at)
						plan := explain(t, db, f)
						if strings.Contains(plan, "TEMP B-TREE") || !strings.Contains(plan, "INDEX") ||
							strings.Contains(plan, "SCAN certificates") && !strings.Contains(plan, "USING INDEX") && !strings.Contains(plan, "COVERING INDEX") {
							t.Errorf("%s: %s", name, plan)
						} else if identity != "" && !strings.Contains(plan, "certificates_identity") {
							t.Errorf("%s: does not read the identity's index: %s", name, plan)
						} else if testing.Verbose() {
							t.Logf("%s: %s", name, plan)
						}
					}
				}
			}
		}
	}
}

func explain(t *testing.T, db *sql.DB, f store.Filter) string {
	t.Helper()
	q, args, err := sqlstore.ListCertificatesQuery(f, &dialect)
	if err != nil {
		t.Fatal(err)
	}
	return explainQuery(t, db, q, args...)
}

// explainQuery is SQLite's plan for q, its steps joined by "; ".
func explainQuery(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// An issuance finds the predecessors it supersedes through the index of
// the live certificates not yet superseded, not through every certificate
// of the identity: an identity shared by many machines has many of those.
func TestSupersedeReadsTheUnsupersededIndex(t *testing.T) {
	const want = "SEARCH certificates USING INDEX certificates_unsuperseded (identity=? AND not_after>?)"
	if got := explainQuery(t, emptyDatabase(t), supersedableSQL, "spiffe://example.org/a", 1, 1, 2); got != want {
		t.Errorf("the plan is %q, want %q", got, want)
	}
}

// An issuance's checks read one entry of an index each: no scan of the
// deny list or of the certificates.
func TestIssuanceChecksSearchIndexes(t *testing.T) {
	plan := explainQuery(t, emptyDatabase(t), checksSQL, `["spiffe://example.org/a","a.example.org"]`, "01", "02", "ab")
	for _, want := range []string{"SEARCH denied_identities USING COVERING INDEX", "(serial=?)", "(fingerprint=?)"} {
		if !strings.Contains(plan, want) {
			t.Errorf("the plan is %q, want %q in it", plan, want)
		}
	}
	if strings.Contains(plan, "SCAN certificates") || strings.Contains(plan, "SCAN denied_identities") {
		t.Errorf("the plan is %q, want searches only", plan)
	}
}
