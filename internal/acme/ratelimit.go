package acme

import (
	"math"
	"slices"
	"time"

	"github.com/mica-pki/mica/internal/ratelimit"
)

// limiter holds token buckets for new orders, per account and per
// identifier (package ratelimit, bounded in memory). It is per server
// process: with several replicas the limit is per replica, which bounds
// abuse without a database write per request.
type limiter struct {
	perAcct, perIdent *ratelimit.Buckets
}

// maxLimiterKeys bounds how many accounts, and how many identifiers, the
// limiter tracks; beyond it the least recently seen are forgotten.
const maxLimiterKeys = 100_000

func newLimiter(perAccount, perIdentifier int, now func() time.Time) *limiter {
	hourly := func(n int) ratelimit.Limit {
		return ratelimit.Limit{Rate: ratelimit.Rate{Events: n, Per: time.Hour}, Burst: n}
	}
	return &limiter{
		perAcct:  ratelimit.New(hourly(perAccount), maxLimiterKeys, now),
		perIdent: ratelimit.New(hourly(perIdentifier), maxLimiterKeys, now),
	}
}

// allowOrder takes one token from the account's bucket and each
// identifier's, or none and returns how many seconds to wait.
func (l *limiter) allowOrder(account string, identifiers []string) int {
	ids := slices.Clone(identifiers)
	slices.Sort(ids)
	claims := []ratelimit.Claim{{Buckets: l.perAcct, Key: account}}
	for _, id := range slices.Compact(ids) {
		claims = append(claims, ratelimit.Claim{Buckets: l.perIdent, Key: id})
	}
	if refused, wait := ratelimit.TakeAll(claims...); refused >= 0 {
		return int(math.Ceil(wait.Seconds()))
	}
	return 0
}
