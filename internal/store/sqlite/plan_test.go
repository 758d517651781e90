package sqlite

import (
	"context"
	"database/sql"
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
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mica.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, st := range []store.Status{store.StatusActive, store.StatusRevoked, ""} {
		q, args, err := sqlstore.ListCertificatesQuery(store.Filter{Identity: "spiffe://example.org/a", Status: st, Now: time.Now(), Limit: 10}, &dialect)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "USING INDEX certificates_identity") {
			t.Errorf("status %q: the plan is %q, want the identity index", st, p)
		}
	}
}
