package limits

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/lru"
	"github.com/mica-pki/mica/internal/ratelimit"
	"github.com/mica-pki/mica/internal/store"
)

// Refusal reasons, the problem slugs of refusals by a detector.
const (
	ReasonRenewalStorm      = "renewal-storm"
	ReasonIssuanceBurst     = "issuance-burst"
	ReasonUnexpectedNetwork = "unexpected-network"
)

// Anomaly kinds, the values of mica_anomalies_total's kind label; the audit
// action is "anomaly." and the kind.
const (
	KindRenewalStorm      = "renewal_storm"
	KindIssuanceBurst     = "issuance_burst"
	KindUnexpectedNetwork = "unexpected_network"
	KindUnexpectedIssuer  = "unexpected_issuer"
)

// Config wires a Guard. Rules and Recorder are required.
type Config struct {
	Rules *Rules
	// Recorder is where audit events go: the store, so that they are leaves
	// of the audit log like every lifecycle event.
	Recorder auditlog.EventRecorder
	// Shared, when set, keeps the rate-limit buckets where every replica
	// takes from them (PostgreSQL: ratelimit/pgbuckets), so that a limit
	// holds across replicas; the guard's own buckets answer when it does
	// not. Without it the buckets are this process's. The detectors'
	// state is per process either way.
	Shared ratelimit.Backend
	// Registerer, when set, gets the guard's metrics.
	Registerer prometheus.Registerer
	Clock      func() time.Time
	Logger     *slog.Logger
}

// Guard implements authority.Guard.
type Guard struct {
	rules   *Rules
	now     func() time.Time
	log     *slog.Logger
	buckets map[*profileRules]*profileBuckets
	storms  *lru.Cache[history]
	// Issuance counts per profile, and per requester in a profile.
	profileBursts, requesterBursts *lru.Cache[window]
	report                         *auditlog.Throttle
	metrics                        metrics
	shared                         ratelimit.Backend
	// fallbackLogged is when a failing shared backend was last logged
	// (Unix nanoseconds), so a database outage is one line a minute.
	fallbackLogged atomic.Int64
}

var _ authority.Guard = (*Guard)(nil)

// profileBuckets are the buckets of one set of rules: the server-wide set
// shared by every profile without overrides, or one profile's own.
type profileBuckets struct {
	identity, requester, source *ratelimit.Buckets
}

// New returns a Guard.
func New(cfg Config) (*Guard, error) {
	if cfg.Rules == nil || cfg.Recorder == nil {
		return nil, fmt.Errorf("limits: Rules and Recorder are required")
	}
	g := &Guard{rules: cfg.Rules, now: cfg.Clock, log: cfg.Logger, buckets: map[*profileRules]*profileBuckets{}}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	n := cfg.Rules.maxKeys
	g.shared = cfg.Shared
	for _, pr := range append([]*profileRules{cfg.Rules.def}, valuesOf(cfg.Rules.profiles)...) {
		bucket := func(scope string, l ratelimit.Limit) *ratelimit.Buckets {
			b := ratelimit.New(l, n, g.now)
			if cfg.Shared != nil {
				// One set of buckets per scope and rule set, named alike on
				// every replica.
				set := pr.name
				if set == "" {
					set = "*"
				}
				b.Shared("limits/"+scope+"/"+set, cfg.Shared)
			}
			return b
		}
		g.buckets[pr] = &profileBuckets{
			identity:  bucket("identity", pr.identity),
			requester: bucket("requester", pr.requester),
			source:    bucket("source", pr.source),
		}
	}
	g.storms = lru.New(n, func(h *history) bool { return g.now().UnixNano() > h.until })
	passed := func(w *window) bool { return g.now().UnixNano() > w.start+2*w.width }
	g.profileBursts, g.requesterBursts = lru.New(n, passed), lru.New(n, passed)
	g.report = auditlog.NewThrottle(cfg.Recorder, g.now, g.log)
	var err error
	if g.metrics, err = newMetrics(cfg.Registerer, cfg.Rules, g.TrackedKeys); err != nil {
		return nil, err
	}
	return g, nil
}

// Run records each minute's summaries until ctx ends, and once more on the
// way out.
func (g *Guard) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return g.report.Flush(context.WithoutCancel(ctx))
		case <-t.C:
			if err := g.report.Flush(ctx); err != nil {
				g.log.LogAttrs(ctx, slog.LevelError, "limits: recording summaries", slog.String("error", err.Error()))
			}
			if sw, ok := g.shared.(sweeper); ok {
				if _, err := sw.Sweep(ctx, g.now()); err != nil {
					g.log.LogAttrs(ctx, slog.LevelWarn, "limits: sweeping refilled shared buckets", slog.String("error", err.Error()))
				}
			}
		}
	}
}

// TrackedKeys is how many keys the limits and detectors hold; each table
// holds at most limits.max_keys.
func (g *Guard) TrackedKeys() int {
	n := g.storms.Len() + g.profileBursts.Len() + g.requesterBursts.Len()
	for _, b := range g.buckets {
		n += b.identity.Keys() + b.requester.Keys() + b.source.Keys()
	}
	return n
}

// Flush records the summaries gathered so far (Run does it every minute).
func (g *Guard) Flush(ctx context.Context) error { return g.report.Flush(ctx) }

// Admit implements authority.Guard: the rate limits, then, for renewals,
// the storm detector, then the burst detector.
func (g *Guard) Admit(ctx context.Context, at authority.Attempt) error {
	pr := g.rules.rules(at.Profile)
	label := g.rules.label(at.Profile)
	if err := g.take(ctx, at, pr, label); err != nil {
		return err
	}
	if at.Lifetime > 0 {
		if err := g.checkStorm(ctx, at, pr, label); err != nil {
			return err
		}
	}
	return g.checkBurst(ctx, at, pr, label)
}

// take takes a token from each of the request's buckets, or from none.
func (g *Guard) take(ctx context.Context, at authority.Attempt, pr *profileRules, label string) error {
	b := g.buckets[pr]
	scopes := [...]string{"identity", "requester", "source"}
	keys := [...]string{at.Identity, at.Requester, SourceKey(at.Source)}
	i, wait, err := ratelimit.TakeAllContext(ctx,
		ratelimit.Claim{Buckets: b.identity, Key: keys[0]},
		ratelimit.Claim{Buckets: b.requester, Key: keys[1]},
		ratelimit.Claim{Buckets: b.source, Key: keys[2]},
	)
	if err != nil {
		g.fellBack(ctx, err)
	}
	if i < 0 {
		return nil
	}
	scope, key, limit := scopes[i], keys[i], [...]*ratelimit.Buckets{b.identity, b.requester, b.source}[i].Limit()
	g.metrics.rateLimited.WithLabelValues(scope, label).Inc()
	wait = ceilSecond(wait)
	detail := fmt.Sprintf("too many requests from %s %s for profile %q (limit %s): retry in %s; "+
		"if this is a loop, fix the client; operators set limits.per_%s in mica.yaml",
		scope, key, at.Profile, limit, wait, scope)
	g.record(ctx, scope+"\x00"+key, at, store.ActionRateLimited, "refused", detail)
	return &authority.Error{Kind: authority.KindRateLimited, Detail: detail, RetryAfter: wait}
}

// sweeper is the optional ability of a shared backend to forget buckets
// that have refilled (Run calls it every minute).
type sweeper interface {
	Sweep(ctx context.Context, now time.Time) (int64, error)
}

// fellBack logs, at most once a minute, that the shared buckets did not
// answer and this replica's own decided.
func (g *Guard) fellBack(ctx context.Context, err error) {
	now := g.now().UnixNano()
	last := g.fallbackLogged.Load()
	if now-last < int64(time.Minute) || !g.fallbackLogged.CompareAndSwap(last, now) {
		return
	}
	g.log.LogAttrs(ctx, slog.LevelWarn, "limits: rate limits hold for this replica only until the database answers",
		slog.String("error", err.Error()))
}

// history is an identity's recent renewals, oldest first, at most the
// storm threshold of them.
type history struct {
	times []int64 // Unix nanoseconds
	until int64   // after this every renewal has left its lifetime window
}

func (g *Guard) checkStorm(ctx context.Context, at authority.Attempt, pr *profileRules, label string) error {
	if pr.storm == ActionOff {
		return nil
	}
	now, life := g.now().UnixNano(), int64(at.Lifetime)
	var storm bool
	var wait time.Duration
	g.storms.Do(at.Identity, func(h *history) {
		i := 0
		for i < len(h.times) && h.times[i] <= now-life {
			i++
		}
		storm = len(h.times)-i >= pr.maxRenewals
		if storm && pr.storm == ActionRefuse {
			// Refused renewals are not counted, so the identity may renew
			// again as soon as its oldest renewal leaves the window.
			wait = time.Duration(h.times[i] + life - now)
			return
		}
		if len(h.times)-i >= pr.maxRenewals {
			i++ // keep at most maxRenewals: the oldest makes room
		}
		// Shift down in place rather than reslice, so the slice keeps its
		// capacity and a renewal allocates nothing.
		n := copy(h.times, h.times[i:])
		h.times = append(h.times[:n], now)
		h.until = now + life
	})
	if !storm {
		return nil
	}
	detail := fmt.Sprintf("renewal storm: identity %s renewed more than %d times within %s, the lifetime of its certificate "+
		"(agents renew at two thirds of a lifetime, about 1.5 times); look for a renewal loop on the host",
		at.Identity, pr.maxRenewals, at.Lifetime.Round(time.Second))
	return g.anomaly(ctx, at, KindRenewalStorm, pr.storm, label, at.Identity, detail,
		func() *authority.Error {
			return &authority.Error{Kind: authority.KindRateLimited, Reason: ReasonRenewalStorm, Detail: detail + "; refused",
				RetryAfter: ceilSecond(wait)}
		})
}

// window counts issuance in fixed windows; the count over the sliding
// window ending now is estimated from the current and previous ones.
type window struct {
	start, width int64 // Unix nanoseconds
	cur, prev    int
}

func (w *window) add(now, width int64) (estimate float64, remaining time.Duration) {
	if w.width != width {
		*w = window{width: width}
	}
	if now >= w.start+width {
		w.prev = 0
		if now < w.start+2*width {
			w.prev = w.cur
		}
		w.start, w.cur = now-now%width, 0
	}
	w.cur++
	elapsed := float64(now-w.start) / float64(width)
	return float64(w.prev)*(1-elapsed) + float64(w.cur), time.Duration(w.start + width - now)
}

func (g *Guard) checkBurst(ctx context.Context, at authority.Attempt, pr *profileRules, label string) error {
	if pr.burst == ActionOff {
		return nil
	}
	now, width := g.now().UnixNano(), int64(pr.burstWindow)
	for _, perRequester := range [...]bool{false, true} {
		counts, key, limit := g.profileBursts, at.Profile, pr.burstPerProfile
		if perRequester {
			if at.Requester == "" {
				continue
			}
			counts, key, limit = g.requesterBursts, at.Profile+"\x00"+at.Requester, pr.burstPerRequester
		}
		var n float64
		var remaining time.Duration
		counts.Do(key, func(w *window) { n, remaining = w.add(now, width) })
		if n <= float64(limit) {
			continue
		}
		what := fmt.Sprintf("profile %q", at.Profile)
		if perRequester {
			what = fmt.Sprintf("requester %s in profile %q", at.Requester, at.Profile)
		}
		detail := fmt.Sprintf("issuance burst: %s asked for about %.0f certificates in the last %s (more than %d is a burst)",
			what, n, pr.burstWindow, limit)
		return g.anomaly(ctx, at, KindIssuanceBurst, pr.burst, label, fmt.Sprint(perRequester, "\x00", key), detail, func() *authority.Error {
			return &authority.Error{Kind: authority.KindRateLimited, Reason: ReasonIssuanceBurst, Detail: detail + "; refused until it subsides",
				RetryAfter: ceilSecond(remaining)}
		})
	}
	return nil
}

// UnexpectedNetwork implements authority.Guard.
func (g *Guard) UnexpectedNetwork(ctx context.Context, at authority.Attempt) error {
	pr := g.rules.rules(at.Profile)
	if pr.network == ActionOff {
		return nil
	}
	src := "an unknown address"
	if at.Source.IsValid() {
		src = at.Source.Unmap().String()
	}
	detail := fmt.Sprintf("request for %s in profile %q came from %s, outside the profile's expected_networks", at.Identity, at.Profile, src)
	return g.anomaly(ctx, at, KindUnexpectedNetwork, pr.network, g.rules.label(at.Profile), at.Profile+"\x00"+SourceKey(at.Source), detail,
		func() *authority.Error {
			return &authority.Error{Kind: authority.KindForbidden, Reason: ReasonUnexpectedNetwork,
				Detail: detail + ", and this server refuses those: make the request from an expected network, or ask an operator to add this one"}
		})
}

// UnexpectedIssuer implements authority.Guard. Authentication has refused
// the certificate already, so the action is always refuse.
func (g *Guard) UnexpectedIssuer(ctx context.Context, source netip.Addr, fi authority.ForeignIssuer) {
	sent := "not sent by the client"
	if fi.SHA256 != "" {
		sent = "SHA-256 " + fi.SHA256
	}
	detail := fmt.Sprintf("a client certificate issued by %q (issuer certificate %s; authority key id %s) was presented, "+
		"but no mica intermediate issued it: refused by authentication", fi.Subject, sent, orNone(fi.KeyID))
	key := fi.SHA256
	if key == "" {
		key = fi.Subject + "\x00" + fi.KeyID
	}
	at := authority.Attempt{Source: source, Actor: "unauthenticated"}
	g.anomaly(ctx, at, KindUnexpectedIssuer, ActionRefuse, unknownProfile, key, detail, nil)
}

// anomaly counts and records a finding, and returns the refusal when the
// action is refuse.
func (g *Guard) anomaly(ctx context.Context, at authority.Attempt, kind string, action Action, label, key, detail string,
	refusal func() *authority.Error) error {
	g.metrics.anomalies.WithLabelValues(kind, label, string(action)).Inc()
	outcome := string(action)
	if action == ActionRefuse {
		outcome = "refused"
	}
	g.record(ctx, key, at, store.Action("anomaly."+kind), outcome, detail)
	if action == ActionRefuse && refusal != nil {
		return refusal()
	}
	return nil
}

func (g *Guard) record(ctx context.Context, key string, at authority.Attempt, action store.Action, outcome, detail string) {
	src := ""
	if at.Source.IsValid() {
		src = at.Source.Unmap().String()
	}
	g.report.Report(ctx, key, "", store.Event{Actor: at.Actor, Source: src, Action: action,
		Identity: at.Identity, Profile: at.Profile, Outcome: outcome, Detail: detail})
}

// SourceKey is the key of a source address: an IPv4 address, or the /64 of
// an IPv6 address, since one host commonly holds a whole /64.
func SourceKey(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// ceilSecond rounds a wait up to whole seconds, at least one, as
// Retry-After counts them: rounding down would invite a retry too early.
func ceilSecond(d time.Duration) time.Duration {
	return max((d + time.Second - 1).Truncate(time.Second), time.Second)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func valuesOf(m map[string]*profileRules) []*profileRules {
	out := make([]*profileRules, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
