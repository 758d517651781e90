package acme

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/mica-pki/mica/internal/ratelimit"
)

// limiter holds token buckets for new orders, per account and per
// identifier (package ratelimit, bounded in memory). With a shared backend
// (several replicas on PostgreSQL) every replica takes from the same
// buckets, at one statement per new order; without one they are this
// process's.
type limiter struct {
	perAcct, perIdent *ratelimit.Buckets
}

// maxLimiterKeys bounds how many accounts, and how many identifiers, the
// limiter tracks; beyond it the least recently seen are forgotten.
const maxLimiterKeys = 100_000

func newLimiter(perAccount, perIdentifier int, now func() time.Time, shared ratelimit.Backend) *limiter {
	hourly := func(n int) ratelimit.Limit {
		return ratelimit.Limit{Rate: ratelimit.Rate{Events: n, Per: time.Hour}, Burst: n}
	}
	l := &limiter{
		perAcct:  ratelimit.New(hourly(perAccount), maxLimiterKeys, now),
		perIdent: ratelimit.New(hourly(perIdentifier), maxLimiterKeys, now),
	}
	if shared != nil {
		l.perAcct.Shared("acme/orders-per-account", shared)
		l.perIdent.Shared("acme/orders-per-identifier", shared)
	}
	return l
}

// allowOrder takes one token from the account's bucket and each
// identifier's, or none and returns how many seconds to wait.
func (l *limiter) allowOrder(ctx context.Context, account string, identifiers []string) int {
	ids := slices.Clone(identifiers)
	slices.Sort(ids)
	claims := []ratelimit.Claim{{Buckets: l.perAcct, Key: account}}
	for _, id := range slices.Compact(ids) {
		claims = append(claims, ratelimit.Claim{Buckets: l.perIdent, Key: id})
	}
	// A backend that does not answer leaves the decision to this
	// replica's buckets (TakeAllContext's fallback).
	if refused, wait, _ := ratelimit.TakeAllContext(ctx, claims...); refused >= 0 {
		return int(math.Ceil(wait.Seconds()))
	}
	return 0
}
