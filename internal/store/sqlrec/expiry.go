package sqlrec

import (
	"fmt"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// CertificatesByExpiry is the aggregate query behind
// store.Store.CertificatesByExpiry: live certificates grouped by profile and
// by the first expiry window their NotAfter falls in. It scans the
// (status, not_after) index range of live certificates once.
func CertificatesByExpiry(now time.Time, ph Placeholder) Query {
	var q Query
	arg := func(v any) string {
		q.Args = append(q.Args, v)
		return ph(len(q.Args))
	}
	var cases strings.Builder
	for _, w := range store.ExpiryWindows {
		if w.Within == 0 {
			fmt.Fprintf(&cases, " ELSE '%s'", w.Window)
			continue
		}
		fmt.Fprintf(&cases, " WHEN not_after < %s THEN '%s'", arg(Micros(now.Add(w.Within))), w.Window)
	}
	q.SQL = "SELECT profile, CASE" + cases.String() + " END AS expires_within, COUNT(*) FROM certificates" +
		" WHERE status = 'active' AND not_after >= " + arg(Micros(now)) +
		" GROUP BY profile, expires_within"
	return q
}

// Rows is what both engines' result sets (database/sql, pgx) offer.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanExpiryCounts reads the rows of CertificatesByExpiry.
func ScanExpiryCounts(rows Rows) ([]store.ExpiryCount, error) {
	var out []store.ExpiryCount
	for rows.Next() {
		var c store.ExpiryCount
		var w string
		if err := rows.Scan(&c.Profile, &w, &c.Count); err != nil {
			return nil, err
		}
		c.Window = store.ExpiryWindow(w)
		out = append(out, c)
	}
	return out, rows.Err()
}
