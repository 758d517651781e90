// Package ratelimit is token buckets by key: each key (an identity, a
// requester, a source network) gets a bucket of Burst tokens refilled at a
// Rate, and a request takes one. The buckets live in a bounded LRU (package
// lru), so the key space cannot exhaust memory, and a bucket that has
// refilled completely is forgotten, since a fresh one would answer the same.
//
// Time is injected (a clock function), so tests step it instead of sleeping.
// Start at New and Buckets.Take.
//
// Buckets are per process unless Shared gives them a Backend: then every
// replica takes from the same buckets (package ratelimit/pgbuckets keeps
// them in PostgreSQL), and the local ones are only the fallback for when
// the backend does not answer.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/lru"
)

// Rate is Events per Per. The zero Rate means unlimited.
type Rate struct {
	Events int
	Per    time.Duration
}

// Unlimited reports whether r limits nothing.
func (r Rate) Unlimited() bool { return r.Events <= 0 || r.Per <= 0 }

func (r Rate) String() string {
	if r.Unlimited() {
		return "off"
	}
	for _, u := range units {
		if r.Per == u.d {
			return fmt.Sprintf("%d/%s", r.Events, u.name)
		}
	}
	return fmt.Sprintf("%d/%s", r.Events, r.Per)
}

var units = []struct {
	name string
	d    time.Duration
}{{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}}

// maxEvents bounds a rate's count, so that arithmetic on it stays exact.
const maxEvents = 1 << 30

// ParseRate reads "events/period": 10/h, 600/1h, 5/m, 100/s, 20/d, 30/15m;
// "off" is unlimited.
func ParseRate(s string) (Rate, error) {
	if s == "off" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	events, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || events < 1 || events > maxEvents {
		return Rate{}, fmt.Errorf("ratelimit: %q is not a rate: write events/period like 10/h, 600/1h or 5/m, or off", s)
	}
	per = strings.TrimSpace(per)
	for _, u := range units {
		if per == u.name {
			return Rate{Events: events, Per: u.d}, nil
		}
	}
	d, err := duration.Parse(per)
	if err != nil || d < time.Second || d > 366*24*time.Hour {
		return Rate{}, fmt.Errorf("ratelimit: %q: the period %q must be s, m, h, d or a duration from 1s to 366d, like 15m", s, per)
	}
	return Rate{Events: events, Per: d}, nil
}

// Limit is a rate and the burst a quiet key may spend at once.
type Limit struct {
	Rate  Rate
	Burst int
}

func (l Limit) String() string {
	if l.Rate.Unlimited() {
		return "off"
	}
	return fmt.Sprintf("%s, burst %d", l.Rate, l.Burst)
}

// bucket is a key's state. The zero bucket is full: at 0 means never used.
type bucket struct {
	tokens float64
	at     int64 // Unix nanoseconds of the last update
}

// Buckets are the token buckets of one limit.
type Buckets struct {
	limit Limit
	// A bucket gains events tokens every per nanoseconds; kept apart (not
	// as one rate) so that whole periods add whole tokens exactly.
	events, per float64
	burst       float64
	now         func() time.Time
	cache       *lru.Cache[bucket]

	// name and backend, when set, make the buckets shared by every
	// replica; name tells them apart from other limits in the backend.
	name    string
	backend Backend
}

// Backend keeps buckets where every replica sees them.
type Backend interface {
	// TakeAll takes one token for every claim, or none, atomically with
	// respect to every other replica; like TakeAll it returns the first
	// refused claim's index (-1 if none) and the longest wait among the
	// refused ones.
	TakeAll(ctx context.Context, now time.Time, claims []SharedClaim) (refused int, retryAfter time.Duration, err error)
}

// SharedClaim is one token a request needs from a Backend: Key in the
// bucket set named Bucket, limited by Limit.
type SharedClaim struct {
	Bucket, Key string
	Limit       Limit
}

// Shared makes b's buckets shared by every replica through backend, under
// name (unique among the limits using that backend). It returns b.
func (b *Buckets) Shared(name string, backend Backend) *Buckets {
	b.name, b.backend = name, backend
	return b
}

// New returns buckets for l holding at most maxKeys keys; clock may be nil
// for time.Now. A Burst below 1 is taken as 1.
func New(l Limit, maxKeys int, clock func() time.Time) *Buckets {
	if clock == nil {
		clock = time.Now
	}
	l.Burst = max(l.Burst, 1)
	b := &Buckets{limit: l, burst: float64(l.Burst), now: clock}
	if !l.Rate.Unlimited() {
		b.events, b.per = float64(l.Rate.Events), float64(l.Rate.Per)
	}
	b.cache = lru.New(maxKeys, func(bk *bucket) bool {
		// A bucket that has refilled is a fresh bucket: forget it.
		return b.level(bk, b.now().UnixNano()) >= b.burst
	})
	return b
}

// Limit is what b enforces.
func (b *Buckets) Limit() Limit { return b.limit }

// Take takes one token from key's bucket. When the bucket is empty it takes
// nothing and says how long until a token will be there.
func (b *Buckets) Take(key string) (ok bool, retryAfter time.Duration) {
	if b.limit.Rate.Unlimited() {
		return true, 0
	}
	now := b.now().UnixNano()
	b.cache.Do(key, func(bk *bucket) {
		bk.tokens, bk.at = b.level(bk, now), now
		if bk.tokens >= 1 {
			bk.tokens--
			ok = true
			return
		}
		retryAfter = time.Duration(math.Ceil((1 - bk.tokens) * b.per / b.events))
	})
	return ok, retryAfter
}

// Give returns a token that Take took, for a caller that takes from several
// buckets and must take from all or none.
func (b *Buckets) Give(key string) {
	if b.limit.Rate.Unlimited() {
		return
	}
	now := b.now().UnixNano()
	b.cache.Do(key, func(bk *bucket) {
		bk.tokens, bk.at = min(b.level(bk, now)+1, b.burst), now
	})
}

// Keys is how many keys are tracked.
func (b *Buckets) Keys() int { return b.cache.Len() }

// level is the bucket's tokens at now.
func (b *Buckets) level(bk *bucket, now int64) float64 {
	if bk.at == 0 {
		return b.burst
	}
	elapsed := float64(max(now-bk.at, 0))
	return min(bk.tokens+elapsed*b.events/b.per, b.burst)
}

// Claim is one token a request needs: from Buckets, for Key. A claim with
// an empty Key is skipped (the request has no such key).
type Claim struct {
	Buckets *Buckets
	Key     string
}

// TakeAllContext is TakeAll for claims on shared buckets: when every
// limited claim's buckets share one Backend, the tokens are taken there in
// one call; if the backend fails, the local buckets decide and the error
// is returned with their answer, for the caller to log.
func TakeAllContext(ctx context.Context, claims ...Claim) (refused int, retryAfter time.Duration, err error) {
	var backend Backend
	var shared []SharedClaim
	var index []int
	for i, c := range claims {
		if c.Key == "" || c.Buckets.limit.Rate.Unlimited() {
			continue
		}
		if c.Buckets.backend == nil || (backend != nil && c.Buckets.backend != backend) {
			backend = nil
			break
		}
		backend = c.Buckets.backend
		shared = append(shared, SharedClaim{Bucket: c.Buckets.name, Key: c.Key, Limit: c.Buckets.limit})
		index = append(index, i)
	}
	if backend != nil {
		r, wait, berr := backend.TakeAll(ctx, claims[index[0]].Buckets.now(), shared)
		if berr == nil {
			if r >= 0 {
				r = index[r]
			}
			return r, wait, nil
		}
		err = fmt.Errorf("ratelimit: the shared buckets did not answer, so this replica's own decided: %w", berr)
	}
	refused, retryAfter = TakeAll(claims...)
	return refused, retryAfter, err
}

// TakeAll takes a token for every claim, or none: when a bucket is empty
// it gives back the tokens it took and returns the index of the first
// claim refused and the longest wait among the refused ones, so that a
// caller that waits that long is not refused again by another of them.
// refused is -1 when every token was taken. It uses this process's
// buckets only; TakeAllContext uses shared ones.
func TakeAll(claims ...Claim) (refused int, retryAfter time.Duration) {
	var small [8]bool
	took := small[:0]
	if len(claims) > len(small) {
		took = make([]bool, 0, len(claims))
	}
	refused = -1
	for i, c := range claims {
		ok := c.Key == ""
		if !ok {
			var wait time.Duration
			if ok, wait = c.Buckets.Take(c.Key); !ok {
				if refused < 0 {
					refused = i
				}
				retryAfter = max(retryAfter, wait)
			}
		}
		took = append(took, ok && c.Key != "")
	}
	if refused >= 0 {
		for i, c := range claims {
			if took[i] {
				c.Buckets.Give(c.Key)
			}
		}
	}
	return refused, retryAfter
}
