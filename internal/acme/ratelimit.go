package acme

import (
	"math"
	"sync"
	"time"
)

// limiter holds token buckets for new orders, per account and per
// identifier. It is per server process: with several replicas the limit is
// per replica, which bounds abuse without a database write per request.
type limiter struct {
	mu        sync.Mutex
	now       func() time.Time
	perAcct   float64 // orders per hour
	perIdent  float64
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(perAccount, perIdentifier int, now func() time.Time) *limiter {
	return &limiter{now: now, perAcct: float64(perAccount), perIdent: float64(perIdentifier), buckets: map[string]*bucket{}}
}

// allowOrder takes one token from the account's bucket and each
// identifier's, or none and returns how many seconds to wait.
func (l *limiter) allowOrder(account string, identifiers []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.lastSweep) > time.Hour {
		// Full buckets carry no information: forget them.
		for k, b := range l.buckets {
			if now.Sub(b.at) > time.Hour {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	keys := map[string]float64{"a:" + account: l.perAcct}
	for _, id := range identifiers {
		keys["i:"+id] = l.perIdent
	}
	wait := 0.0
	for k, rate := range keys {
		b := l.fill(k, rate, now)
		if b.tokens < 1 {
			wait = math.Max(wait, (1-b.tokens)/rate*3600)
		}
	}
	if wait > 0 {
		return int(math.Ceil(wait))
	}
	for k := range keys {
		l.buckets[k].tokens--
	}
	return 0
}

func (l *limiter) fill(key string, rate float64, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: rate, at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(rate, b.tokens+now.Sub(b.at).Hours()*rate)
	b.at = now
	return b
}
