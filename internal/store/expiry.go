package store

import "time"

// ExpiryWindow is how soon a live certificate expires, in the coarse
// buckets operators watch: within an hour, a day, a week, a month, or later.
// The set is fixed so that metrics built on it have a bounded number of
// series however many certificates there are.
type ExpiryWindow string

const (
	Within1h  ExpiryWindow = "1h"
	Within24h ExpiryWindow = "24h"
	Within7d  ExpiryWindow = "7d"
	Within30d ExpiryWindow = "30d"
	Later     ExpiryWindow = "more"
)

// ExpiryWindows lists the windows from the soonest, with their upper bound
// (zero for Later, which has none).
var ExpiryWindows = []struct {
	Window ExpiryWindow
	Within time.Duration
}{
	{Within1h, time.Hour},
	{Within24h, 24 * time.Hour},
	{Within7d, 7 * 24 * time.Hour},
	{Within30d, 30 * 24 * time.Hour},
	{Later, 0},
}

// ExpiryCount is how many live certificates of one profile expire within
// one window: active (not revoked), not yet expired at the time of asking,
// and not in an earlier window.
type ExpiryCount struct {
	Profile string
	Window  ExpiryWindow
	Count   int64
}

// TimelineFilter selects the expiry timeline: live certificates (active,
// NotAfter at or after Now) expiring before From plus Days days, counted
// per day since From (day 0 is [From, From+24h)).
type TimelineFilter struct {
	Now  time.Time
	From time.Time // the first day's start; at or before Now
	Days int
}

// DayCount is how many live certificates of one profile expire on one day
// of a timeline.
type DayCount struct {
	Day     int // since TimelineFilter.From
	Profile string
	Count   int64
}
