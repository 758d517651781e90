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

// ScanExpiryCount reads one row of CertificatesByExpiry.
func ScanExpiryCount(scan func(dest ...any) error) (store.ExpiryCount, error) {
	var c store.ExpiryCount
	var w string
	if err := scan(&c.Profile, &w, &c.Count); err != nil {
		return store.ExpiryCount{}, err
	}
	c.Window = store.ExpiryWindow(w)
	return c, nil
}
