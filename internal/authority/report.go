package authority

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// ExpiringReport is the expiry report for the weekly routine (admins
// only): the certificates that will expire within `within` and that
// nothing has replaced yet — active, not revoked, not superseded by a newer
// certificate of the same identity — grouped by profile and owner (the
// requester; see store.ExpiringGroup). The store computes it in SQL.
func (a *Authority) ExpiringReport(ctx context.Context, p Principal, within time.Duration, profile string, limit int) (store.ExpiringReport, time.Time, error) {
	if err := a.Authorize(p, ActReportRead, Resource{}); err != nil {
		return store.ExpiringReport{}, time.Time{}, err
	}
	if within <= 0 {
		return store.ExpiringReport{}, time.Time{}, newError(KindInvalid, nil, "the report window must be positive, like 30d, 12h or 90m")
	}
	now := a.now()
	rep, err := a.store.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(within), Profile: profile, Limit: limit})
	if err != nil {
		return rep, now, newError(KindInternal, err, "could not build the expiry report: %v", err)
	}
	return rep, now, nil
}
