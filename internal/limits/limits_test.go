package limits_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// events is an in-memory EventRecorder for the unit tests; the API test
// uses the real store.
type events struct {
	mu  sync.Mutex
	evs []store.Event
}

func (e *events) RecordEvent(_ context.Context, ev *store.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, *ev)
	return nil
}

func (e *events) with(action store.Action) []store.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []store.Event
	for _, ev := range e.evs {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }

type harness struct {
	g   *limits.Guard
	reg *prometheus.Registry
	evs *events
	clk *clock
}

// newGuard compiles the YAML of the two sections (either may be empty) for
// the profiles service and batch.
func newGuard(t *testing.T, limitsYAML, anomaliesYAML string) *harness {
	t.Helper()
	var l limits.Limits
	var a limits.Anomalies
	if limitsYAML != "" {
		if err := yaml.Unmarshal([]byte(limitsYAML), &l); err != nil {
			t.Fatal(err)
		}
	}
	if anomaliesYAML != "" {
		if err := yaml.Unmarshal([]byte(anomaliesYAML), &a); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := limits.Compile(l, a, []string{"service", "batch"})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{reg: prometheus.NewRegistry(), evs: &events{}, clk: &clock{t: time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)}}
	if h.g, err = limits.New(limits.Config{Rules: rules, Recorder: h.evs, Registerer: h.reg, Clock: h.clk.now}); err != nil {
		t.Fatal(err)
	}
	return h
}

// counter is the value of the series of counter name with exactly labels
// in what g gathers, or 0 when there is none.
func counter(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsMatch(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, l := range m.GetLabel() {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func renewal(id string, life time.Duration) authority.Attempt {
	return authority.Attempt{Method: policy.MethodRenew, Profile: "service", Identity: id, Requester: id,
		Source: netip.MustParseAddr("10.0.0.7"), Lifetime: life, Actor: id}
}

func enrollment(id, requester, source string) authority.Attempt {
	return authority.Attempt{Method: policy.MethodToken, Profile: "service", Identity: id, Requester: requester,
		Source: netip.MustParseAddr(source), Actor: "token:x"}
}

func asError(t *testing.T, err error) *authority.Error {
	t.Helper()
	var e *authority.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *authority.Error", err)
	}
	return e
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, limits, anomalies, want string
	}{
		{"bad rate", "per_identity: {rate: 10/x}", "", `limits: limits.per_identity.rate: ratelimit: "10/x": the period "x" must be`},
		{"missing rate", "per_source: {burst: 5}", "", "limits: limits.per_source.rate: missing"},
		{"negative burst", "per_requester: {rate: 5/m, burst: -1}", "", "limits: limits.per_requester.burst: -1 is negative"},
		{"burst without rate", "per_source: {rate: off, burst: 3}", "", "limits: limits.per_source.burst: a burst needs a rate"},
		{"max keys", "max_keys: -5", "", "limits: limits.max_keys: -5 is out of range"},
		{"profile override", "profiles: {service: {per_source: {rate: lots}}}", "", `limits: limits.profiles.service.per_source.rate: ratelimit: "lots" is not a rate`},
		{"unknown profile in limits", "profiles: {nope: {per_source: {rate: 1/s}}}", "", `limits: limits.profiles.nope: there is no profile "nope"`},
		{"unknown profile in anomalies", "", "profiles: {nope: {renewal_storm: {action: refuse}}}", `limits: anomalies.profiles.nope: there is no profile "nope"`},
		{"bad action", "", "renewal_storm: {action: block}", `limits: anomalies.renewal_storm.action: "block" is not an action: use alert, refuse or off`},
		{"bad threshold", "", "renewal_storm: {max_renewals_per_lifetime: -2}", "limits: anomalies.renewal_storm.max_renewals_per_lifetime: -2 is out of range"},
		{"bad window", "", "issuance_burst: {window: 10ms}", "limits: anomalies.issuance_burst.window: 10ms is out of range"},
		{"bad profile action", "", "profiles: {batch: {unexpected_network: {action: maybe}}}", `limits: anomalies.profiles.batch.unexpected_network.action: "maybe" is not an action`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l limits.Limits
			var a limits.Anomalies
			if err := yaml.Unmarshal([]byte(tt.limits), &l); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(tt.anomalies), &a); err != nil {
				t.Fatal(err)
			}
			_, err := limits.Compile(l, a, []string{"service", "batch"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v\nwant one containing %q", err, tt.want)
			}
		})
	}
}

func TestPerIdentityLimitRefusesThenRecovers(t *testing.T) {
	h := newGuard(t, "per_identity: {rate: 6/h, burst: 2}", "")
	ctx := context.Background()
	at := enrollment("spiffe://example.org/a", "spiffe://example.org/mica/admin/ops", "10.0.0.1")
	for i := range 2 {
		if err := h.g.Admit(ctx, at); err != nil {
			t.Fatalf("request %d within the burst: %v", i+1, err)
		}
	}
	e := asError(t, h.g.Admit(ctx, at))
	if e.Kind != authority.KindRateLimited || e.Reason != "" || e.RetryAfter != 10*time.Minute {
		t.Fatalf("refusal = %+v, want rate-limited with Retry-After 10m", e)
	}
	if !strings.Contains(e.Detail, "identity spiffe://example.org/a") || !strings.Contains(e.Detail, "limits.per_identity") {
		t.Errorf("detail %q should name the identity and the setting", e.Detail)
	}
	if other := h.g.Admit(ctx, enrollment("spiffe://example.org/b", "spiffe://example.org/mica/admin/ops", "10.0.0.1")); other != nil {
		t.Errorf("another identity was refused: %v", other)
	}
	h.clk.step(10 * time.Minute)
	if err := h.g.Admit(ctx, at); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if n := counter(t, h.reg, "mica_rate_limited_total", map[string]string{"scope": "identity", "profile": "service"}); n != 1 {
		t.Errorf("mica_rate_limited_total{identity,service} = %v, want 1", n)
	}
	evs := h.evs.with(store.ActionRateLimited)
	if len(evs) != 1 || evs[0].Identity != "spiffe://example.org/a" || evs[0].Outcome != "refused" || evs[0].Source != "10.0.0.1" {
		t.Fatalf("rate.limited events = %+v", evs)
	}
}

func TestLimitsAreAllOrNothing(t *testing.T) {
	// The source allows 2; the first identity's bucket must not lose a
	// token to a request the source limit refused.
	h := newGuard(t, "per_identity: {rate: 2/h}\nper_source: {rate: 2/h}", "")
	ctx := context.Background()
	admin := "spiffe://example.org/mica/admin/ops"
	h.g.Admit(ctx, enrollment("spiffe://example.org/x", admin, "192.0.2.1"))
	h.g.Admit(ctx, enrollment("spiffe://example.org/y", admin, "192.0.2.1"))
	if e := asError(t, h.g.Admit(ctx, enrollment("spiffe://example.org/x", admin, "192.0.2.1"))); !strings.Contains(e.Detail, "source 192.0.2.1") {
		t.Fatalf("third request from the source: %v, want refused by the source limit", e)
	}
	if err := h.g.Admit(ctx, enrollment("spiffe://example.org/x", admin, "192.0.2.2")); err != nil {
		t.Fatalf("x from another source: %v; the refused request must have given x's token back", err)
	}
}

func TestIPv6SourcesAreGroupedBy64(t *testing.T) {
	h := newGuard(t, "per_source: {rate: 2/h}", "")
	ctx := context.Background()
	admin := "spiffe://example.org/mica/admin/ops"
	for i, src := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"} {
		if err := h.g.Admit(ctx, enrollment(fmt.Sprint("spiffe://example.org/v6-", i), admin, src)); err != nil {
			t.Fatal(err)
		}
	}
	err := h.g.Admit(ctx, enrollment("spiffe://example.org/v6-3", admin, "2001:db8:1:2:abcd::1"))
	if e := asError(t, err); !strings.Contains(e.Detail, "source 2001:db8:1:2::/64") {
		t.Fatalf("third request from the same /64: %v", err)
	}
	if err := h.g.Admit(ctx, enrollment("spiffe://example.org/v6-4", admin, "2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	if k := limits.SourceKey(netip.MustParseAddr("::ffff:192.0.2.9")); k != "192.0.2.9" {
		t.Errorf("SourceKey of a v4-mapped address = %q", k)
	}
}

func TestProfileOverridesServerWideLimit(t *testing.T) {
	h := newGuard(t, "per_requester: {rate: 1/h}\nprofiles: {batch: {per_requester: {rate: 100/h}}}", "")
	ctx := context.Background()
	at := enrollment("spiffe://example.org/j1", "spiffe://example.org/mica/admin/ci", "10.1.1.1")
	h.g.Admit(ctx, at)
	at.Identity = "spiffe://example.org/j2"
	if err := h.g.Admit(ctx, at); err == nil {
		t.Fatal("second enrollment by the requester in service: want refused by 1/h")
	}
	at.Profile = "batch"
	for i := range 50 {
		at.Identity = fmt.Sprint("spiffe://example.org/batch-", i)
		if err := h.g.Admit(ctx, at); err != nil {
			t.Fatalf("batch enrollment %d: %v", i, err)
		}
	}
}

func TestDefaultsLetAgentsRenewAndStopALoop(t *testing.T) {
	h := newGuard(t, "", "")
	ctx := context.Background()
	// An agent with 5-minute certificates renews every 200 s for a day.
	for i := range 24 * 18 {
		if err := h.g.Admit(ctx, renewal("spiffe://example.org/agent", 5*time.Minute)); err != nil {
			t.Fatalf("renewal %d of a well-behaved agent: %v", i+1, err)
		}
		h.clk.step(200 * time.Second)
	}
	if n := len(h.evs.evs); n != 0 {
		t.Fatalf("a well-behaved agent produced %d events: %+v", n, h.evs.evs)
	}
	// A loop renewing as fast as it can is stopped after the burst.
	var refused int
	for range 100 {
		if h.g.Admit(ctx, renewal("spiffe://example.org/loop", time.Hour)) != nil {
			refused++
		}
	}
	if refused != 90 {
		t.Errorf("a tight loop got %d of 100 refused, want 90 (burst 10)", refused)
	}
}

func TestRenewalStorm(t *testing.T) {
	ctx := context.Background()
	id := "spiffe://example.org/stormy"
	t.Run("renewing at two thirds of the lifetime is no storm", func(t *testing.T) {
		h := newGuard(t, "", "")
		for range 50 {
			if err := h.g.Admit(ctx, renewal(id, time.Hour)); err != nil {
				t.Fatal(err)
			}
			h.clk.step(40 * time.Minute)
		}
		if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "renewal_storm", "profile": "service", "action": "alert"}); n != 0 {
			t.Fatalf("storm counter = %v for a normal agent", n)
		}
	})
	t.Run("alert: the fifth renewal in a lifetime is reported, not refused", func(t *testing.T) {
		h := newGuard(t, "", "")
		for i := range 6 {
			if err := h.g.Admit(ctx, renewal(id, time.Hour)); err != nil {
				t.Fatalf("renewal %d refused with action alert: %v", i+1, err)
			}
			h.clk.step(time.Minute)
		}
		if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "renewal_storm", "profile": "service", "action": "alert"}); n != 2 {
			t.Fatalf("storm counter = %v, want 2 (renewals 5 and 6)", n)
		}
		evs := h.evs.with(store.ActionAnomalyRenewalStorm)
		if len(evs) != 1 || evs[0].Identity != id || evs[0].Outcome != "alert" || !strings.Contains(evs[0].Detail, "more than 4 times within 1h0m0s") {
			t.Fatalf("storm events = %+v; want one, the second throttled", evs)
		}
		if err := h.g.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if evs := h.evs.with(store.ActionAnomalyRenewalStorm); len(evs) != 2 || !strings.HasPrefix(evs[1].Detail, "1 more since") {
			t.Fatalf("after flush: %+v, want a summary of the throttled one", evs)
		}
	})
	t.Run("refuse: refused until the oldest renewal leaves the lifetime", func(t *testing.T) {
		h := newGuard(t, "", "profiles: {service: {renewal_storm: {action: refuse, max_renewals_per_lifetime: 2}}}")
		h.g.Admit(ctx, renewal(id, time.Hour))
		h.clk.step(10 * time.Minute)
		h.g.Admit(ctx, renewal(id, time.Hour))
		h.clk.step(10 * time.Minute)
		e := asError(t, h.g.Admit(ctx, renewal(id, time.Hour)))
		if e.Kind != authority.KindRateLimited || e.Reason != limits.ReasonRenewalStorm || e.RetryAfter != 40*time.Minute {
			t.Fatalf("refusal = %+v, want renewal-storm with Retry-After 40m", e)
		}
		h.clk.step(40 * time.Minute)
		if err := h.g.Admit(ctx, renewal(id, time.Hour)); err != nil {
			t.Fatalf("after Retry-After: %v", err)
		}
		if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "renewal_storm", "profile": "service", "action": "refuse"}); n != 1 {
			t.Errorf("storm counter = %v, want 1", n)
		}
	})
	t.Run("off", func(t *testing.T) {
		h := newGuard(t, "", "renewal_storm: {action: off}")
		for range 8 {
			h.g.Admit(ctx, renewal(id, time.Hour))
		}
		if len(h.evs.evs) != 0 {
			t.Fatalf("events with the detector off: %+v", h.evs.evs)
		}
	})
}

func TestIssuanceBurst(t *testing.T) {
	ctx := context.Background()
	cfg := "issuance_burst: {window: 1m, per_profile: 20, per_requester: 10}"
	t.Run("steady issuance below the threshold", func(t *testing.T) {
		h := newGuard(t, "", cfg)
		for i := range 200 {
			at := enrollment(fmt.Sprint("spiffe://example.org/s", i), fmt.Sprint("spiffe://example.org/mica/admin/", i%4), "10.0.0.1")
			if err := h.g.Admit(ctx, at); err != nil {
				t.Fatal(err)
			}
			h.clk.step(4 * time.Second) // 15 a minute in the profile, under 4 a minute per requester
		}
		if evs := h.evs.with(store.ActionAnomalyIssuanceBurst); len(evs) != 0 {
			t.Fatalf("burst events for steady issuance: %+v", evs)
		}
	})
	t.Run("one requester bursting", func(t *testing.T) {
		h := newGuard(t, "", cfg)
		for i := range 12 {
			h.g.Admit(ctx, enrollment(fmt.Sprint("spiffe://example.org/b", i), "spiffe://example.org/mica/admin/ci", "10.0.0.1"))
		}
		evs := h.evs.with(store.ActionAnomalyIssuanceBurst)
		if len(evs) != 1 || !strings.Contains(evs[0].Detail, "requester spiffe://example.org/mica/admin/ci") {
			t.Fatalf("burst events = %+v", evs)
		}
		if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "issuance_burst", "profile": "service", "action": "alert"}); n != 2 {
			t.Errorf("burst counter = %v, want 2 (requests 11 and 12)", n)
		}
	})
	t.Run("refuse, then the window passes", func(t *testing.T) {
		h := newGuard(t, "", "issuance_burst: {action: refuse, window: 1m, per_profile: 5, per_requester: 100}")
		var refused *authority.Error
		for i := range 6 {
			if err := h.g.Admit(ctx, enrollment(fmt.Sprint("spiffe://example.org/r", i), fmt.Sprint("spiffe://example.org/mica/admin/", i), "10.0.0.1")); err != nil {
				refused = asError(t, err)
			}
		}
		if refused == nil || refused.Reason != limits.ReasonIssuanceBurst || refused.Kind != authority.KindRateLimited || refused.RetryAfter <= 0 {
			t.Fatalf("sixth in a minute: %+v, want an issuance-burst refusal", refused)
		}
		h.clk.step(3 * time.Minute)
		if err := h.g.Admit(ctx, enrollment("spiffe://example.org/later", "spiffe://example.org/mica/admin/z", "10.0.0.1")); err != nil {
			t.Fatalf("after the burst: %v", err)
		}
	})
}

func TestUnexpectedNetwork(t *testing.T) {
	ctx := context.Background()
	at := enrollment("spiffe://example.org/n", "spiffe://example.org/mica/admin/ops", "203.0.113.5")
	h := newGuard(t, "", "profiles: {batch: {unexpected_network: {action: refuse}}}")
	if err := h.g.UnexpectedNetwork(ctx, at); err != nil {
		t.Fatalf("service alerts only: %v", err)
	}
	at.Profile = "batch"
	e := asError(t, h.g.UnexpectedNetwork(ctx, at))
	if e.Kind != authority.KindForbidden || e.Reason != limits.ReasonUnexpectedNetwork || !strings.Contains(e.Detail, "203.0.113.5") {
		t.Fatalf("batch refusal = %+v", e)
	}
	for profile, action := range map[string]string{"service": "alert", "batch": "refuse"} {
		if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "unexpected_network", "profile": profile, "action": action}); n != 1 {
			t.Errorf("unexpected_network{%s,%s} = %v, want 1", profile, action, n)
		}
	}
	if evs := h.evs.with(store.ActionAnomalyUnexpectedNetwork); len(evs) != 2 || evs[0].Source != "203.0.113.5" {
		t.Fatalf("events = %+v", evs)
	}
}

func TestUnexpectedIssuer(t *testing.T) {
	h := newGuard(t, "", "")
	fi := authority.ForeignIssuer{Subject: "CN=Rogue CA", SHA256: strings.Repeat("ab", 32), KeyID: "0102"}
	for range 5 {
		h.g.UnexpectedIssuer(context.Background(), netip.MustParseAddr("198.51.100.4"), fi)
	}
	if n := counter(t, h.reg, "mica_anomalies_total", map[string]string{"kind": "unexpected_issuer", "profile": "unknown", "action": "refuse"}); n != 5 {
		t.Errorf("counter = %v, want 5", n)
	}
	evs := h.evs.with(store.ActionAnomalyUnexpectedIssuer)
	if len(evs) != 1 || !strings.Contains(evs[0].Detail, `"CN=Rogue CA"`) || !strings.Contains(evs[0].Detail, fi.SHA256) || evs[0].Actor != "unauthenticated" {
		t.Fatalf("events = %+v", evs)
	}
}

func TestUnknownProfilesShareOneLabel(t *testing.T) {
	h := newGuard(t, "per_identity: {rate: 1/h}", "")
	ctx := context.Background()
	for i := range 20 {
		at := enrollment(fmt.Sprint("spiffe://example.org/u", i), "x", "10.0.0.1")
		at.Profile = fmt.Sprint("made-up-", i)
		h.g.Admit(ctx, at)
		h.g.Admit(ctx, at)
	}
	if n := counter(t, h.reg, "mica_rate_limited_total", map[string]string{"scope": "identity", "profile": "unknown"}); n != 20 {
		t.Fatalf("unknown-profile series = %v, want 20", n)
	}
	fams, _ := h.reg.Gather()
	for _, f := range fams {
		if f.GetName() == "mica_rate_limited_total" && len(f.GetMetric()) != 9 {
			t.Errorf("%d series, want 9 (3 scopes × service, batch, unknown)", len(f.GetMetric()))
		}
	}
}

func TestAFloodCostsBoundedEvents(t *testing.T) {
	h := newGuard(t, "per_source: {rate: 1/h}", "issuance_burst: {action: off}")
	ctx := context.Background()
	// 3,000 sources, each refused 3 times: per key one event at once and
	// one summary, and past 1,000 keys everything folds into "other".
	for i := range 3000 {
		src := fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)
		for j := range 4 {
			h.g.Admit(ctx, enrollment(fmt.Sprint("spiffe://example.org/f", i, "-", j), "x", src))
		}
	}
	immediate := len(h.evs.with(store.ActionRateLimited))
	if err := h.g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	total := len(h.evs.with(store.ActionRateLimited))
	if immediate != 1000 || total != 2001 {
		t.Fatalf("%d events at once and %d after the flush; want 1000 and 2001 (1000 summaries, 1 for the rest)", immediate, total)
	}
	var other []store.Event
	for _, ev := range h.evs.with(store.ActionRateLimited) {
		if ev.Actor == "various" {
			other = append(other, ev)
		}
	}
	if len(other) != 1 || !strings.HasPrefix(other[0].Detail, "6000 more since") || !strings.Contains(other[0].Detail, "beyond the first 1000") {
		t.Errorf("the overflow summaries = %+v, want one of 6000", other)
	}
}

func TestKeyStateIsBounded(t *testing.T) {
	h := newGuard(t, "max_keys: 100\nper_identity: {rate: 1/d}", "")
	ctx := context.Background()
	for i := range 20000 {
		h.g.Admit(ctx, renewal(fmt.Sprint("spiffe://example.org/many/", i), time.Hour))
	}
	if n := h.g.TrackedKeys(); n > 4*100 {
		t.Fatalf("%d keys tracked with max_keys 100 (at most 100 per table)", n)
	}
}
