package web

import (
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// The overview shows what the server's metrics say — the same figures
// Prometheus scrapes, read from the registry at request time — so the
// console and the alerts never disagree. The inventory gauge's store query
// is cached by the metrics themselves (telemetry.Sources.InventoryEvery),
// so opening the overview costs no scan of a million certificates.

type overviewView struct {
	HaveMetrics bool
	MayRead     bool // report:read: the figures
	Refused     string
	Windows     []string
	Profiles    []liveRow
	LiveTotal   int64
	Rates       rates
	CRL         freshness
	RootCRL     freshness
	OCSP        struct {
		Cached    float64
		OldestAge float64
		Known     bool
	}
	Feed struct {
		Subscribers, Lag, Seq float64
		Known                 bool
	}
	Audit struct {
		Leaves, CheckpointSize, CheckpointAge float64
		Known                                 bool
		State                                 string
	}
	Verify   verifyState
	CAs      []caRow
	TLS      caRow
	Approval struct {
		Pending int
		MayRead bool
	}
}

// liveRow is one profile's live certificates by expiry window.
type liveRow struct {
	Profile string
	Counts  []int64 // by window, as Windows
	Total   int64
}

type freshness struct {
	Known            bool
	Age, NextUpdate  float64 // seconds
	Entries          float64
	State, StateText string
}

type caRow struct {
	Name      string
	Left      float64 // seconds
	Expires   time.Time
	State     string
	StateText string
}

// windows are the inventory gauge's expiry windows, soonest first.
var windows = func() []string {
	var out []string
	for _, w := range store.ExpiryWindows {
		out = append(out, string(w.Window))
	}
	return out
}()

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	v := overviewView{Windows: windows}
	if err := c.cfg.Authority.Authorize(s.Principal, authority.ActReportRead, authority.Resource{}); err != nil {
		v.Refused = detail(err)
	} else {
		v.MayRead = true
	}
	if v.MayRead && c.cfg.Metrics != nil {
		if fams, err := c.cfg.Metrics.Gather(); err != nil {
			c.log.Warn("console: reading the metrics failed", "error", err.Error())
		} else {
			v.HaveMetrics = true
			c.fillOverview(&v, familyMap(fams))
		}
	}
	if v.MayRead {
		v.Verify = c.verify.state()
	}
	if list, err := c.cfg.Authority.Approvals(r.Context(), s.Principal, store.ApprovalFilter{Status: store.ApprovalPending, Limit: 100}); err == nil {
		v.Approval.Pending, v.Approval.MayRead = len(list), true
	}
	c.render(w, r, s, http.StatusOK, "overview", "Overview", "overview", v)
}

func familyMap(fams []*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// single reads a metric without labels.
func single(fams map[string]*dto.MetricFamily, name string) (float64, bool) {
	f := fams[name]
	if f == nil || len(f.Metric) == 0 {
		return 0, false
	}
	return value(f.Metric[0]), true
}

func (c *Console) fillOverview(v *overviewView, fams map[string]*dto.MetricFamily) {
	now := c.now()
	if f := fams["mica_live_certificates"]; f != nil {
		rows := map[string]*liveRow{}
		for _, m := range f.Metric {
			p := label(m, "profile")
			row := rows[p]
			if row == nil {
				row = &liveRow{Profile: p, Counts: make([]int64, len(windows))}
				rows[p] = row
			}
			if i := slices.Index(windows, label(m, "expires_within")); i >= 0 {
				n := int64(value(m))
				row.Counts[i] += n
				row.Total += n
				v.LiveTotal += n
			}
		}
		for _, row := range rows {
			if row.Total > 0 {
				v.Profiles = append(v.Profiles, *row)
			}
		}
		sort.Slice(v.Profiles, func(i, j int) bool { return v.Profiles[i].Profile < v.Profiles[j].Profile })
	}
	totals := issuanceTotals(fams)
	c.rates.add(now, totals)
	v.Rates = c.rates.over(now, 5*time.Minute)

	if age, ok := single(fams, "mica_crl_age_seconds"); ok {
		next, _ := single(fams, "mica_crl_next_update_seconds")
		entries, _ := single(fams, "mica_crl_entries")
		v.CRL = freshness{Known: true, Age: age, NextUpdate: next, Entries: entries}
		v.CRL.State, v.CRL.StateText = judgeNext(next)
	}
	if age, ok := single(fams, "mica_root_crl_age_seconds"); ok {
		next, _ := single(fams, "mica_root_crl_next_update_seconds")
		v.RootCRL = freshness{Known: true, Age: age, NextUpdate: next}
		v.RootCRL.State, v.RootCRL.StateText = judgeNext(next)
	}
	if n, ok := single(fams, "mica_ocsp_cached_responses"); ok {
		v.OCSP.Known, v.OCSP.Cached = true, n
		v.OCSP.OldestAge, _ = single(fams, "mica_ocsp_oldest_response_age_seconds")
	}
	if n, ok := single(fams, "mica_feed_subscribers"); ok {
		v.Feed.Known, v.Feed.Subscribers = true, n
		v.Feed.Lag, _ = single(fams, "mica_feed_lag_events")
		v.Feed.Seq, _ = single(fams, "mica_feed_seq")
	}
	if n, ok := single(fams, "mica_audit_log_leaves"); ok {
		v.Audit.Known, v.Audit.Leaves = true, n
		v.Audit.CheckpointSize, _ = single(fams, "mica_audit_checkpoint_leaves")
		v.Audit.CheckpointAge, _ = single(fams, "mica_audit_checkpoint_age_seconds")
		v.Audit.State = "ok"
		if v.Audit.CheckpointSize < v.Audit.Leaves && v.Audit.CheckpointAge > 300 {
			v.Audit.State = "bad" // the shipped alert's condition: checkpoints stopped
		}
	}
	if f := fams["mica_ca_certificate_expiry_seconds"]; f != nil {
		for _, m := range f.Metric {
			v.CAs = append(v.CAs, caExpiry(label(m, "ca"), value(m), now))
		}
		sort.Slice(v.CAs, func(i, j int) bool { return v.CAs[i].Left < v.CAs[j].Left })
	}
	if left, ok := single(fams, "mica_server_certificate_expiry_seconds"); ok {
		// Renewed at two thirds of a week: less than a day left means
		// renewal is failing.
		v.TLS = caExpiry("API server certificate", left, now)
		v.TLS.State, v.TLS.StateText = "ok", "renewed automatically"
		if left < 86400 {
			v.TLS.State, v.TLS.StateText = "bad", "renewal is overdue: see the server log"
		}
	}
}

// judgeNext says how fresh a CRL is by the time left until its
// nextUpdate.
func judgeNext(next float64) (string, string) {
	switch {
	case next < 0:
		return "bad", "past its next update: relying parties hold a stale CRL"
	case next < 3600:
		return "warn", "next update within the hour"
	}
	return "ok", "fresh"
}

func caExpiry(name string, left float64, now time.Time) caRow {
	row := caRow{Name: name, Left: left, Expires: now.Add(time.Duration(left * float64(time.Second)))}
	switch days := left / 86400; {
	case days < 7:
		row.State, row.StateText = "bad", "expires within a week"
	case days < 30:
		row.State, row.StateText = "warn", "expires within 30 days"
	default:
		row.State, row.StateText = "ok", "valid"
	}
	return row
}

// issuance is the issuance counters at one moment.
type issuance struct {
	issued, refused float64
	reasons         map[string]float64
}

func issuanceTotals(fams map[string]*dto.MetricFamily) issuance {
	t := issuance{reasons: map[string]float64{}}
	if f := fams["mica_issuance_requests_total"]; f != nil {
		for _, m := range f.Metric {
			switch label(m, "outcome") {
			case authority.OutcomeIssued:
				t.issued += value(m)
			default:
				t.refused += value(m)
			}
		}
	}
	if f := fams["mica_issuance_refusals_total"]; f != nil {
		for _, m := range f.Metric {
			t.reasons[label(m, "reason")] += value(m)
		}
	}
	return t
}

// rates are the issuance rates over a recent window.
type rates struct {
	Known             bool
	Window            time.Duration
	Issued, Refused   float64 // per minute
	IssuedN, RefusedN float64 // in the window
	Reasons           []reasonRate
}

type reasonRate struct {
	Reason string
	Count  float64
}

// rateSampler keeps the counters' recent samples (from Run every 30s and
// from each overview), so that a rate is a difference over minutes, as
// Prometheus' increase() would say.
type rateSampler struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at time.Time
	issuance
}

func (rs *rateSampler) add(now time.Time, t issuance) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	// Within 10s of the sample before the newest, refresh the newest
	// rather than keep one sample per request.
	if n := len(rs.samples); n >= 2 && now.Sub(rs.samples[n-2].at) < 10*time.Second {
		rs.samples[n-1] = sample{now, t}
		return
	}
	rs.samples = append(rs.samples, sample{now, t})
	i := 0
	for i < len(rs.samples)-1 && now.Sub(rs.samples[i].at) > 15*time.Minute {
		i++
	}
	rs.samples = rs.samples[i:]
}

// over is the rate between the oldest sample within window and the newest.
func (rs *rateSampler) over(now time.Time, window time.Duration) rates {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.samples) < 2 {
		return rates{}
	}
	last := rs.samples[len(rs.samples)-1]
	first := last
	for _, s := range rs.samples {
		if now.Sub(s.at) <= window {
			first = s
			break
		}
	}
	d := last.at.Sub(first.at)
	if d < 10*time.Second {
		return rates{}
	}
	r := rates{Known: true, Window: d.Round(time.Second)}
	// A counter that went down was reset (a restart): count from zero.
	inc := func(a, b float64) float64 {
		if b < a {
			return b
		}
		return b - a
	}
	r.IssuedN, r.RefusedN = inc(first.issued, last.issued), inc(first.refused, last.refused)
	r.Issued, r.Refused = r.IssuedN/d.Minutes(), r.RefusedN/d.Minutes()
	for reason, n := range last.reasons {
		if k := inc(first.reasons[reason], n); k > 0 {
			r.Reasons = append(r.Reasons, reasonRate{reason, k})
		}
	}
	sort.Slice(r.Reasons, func(i, j int) bool { return r.Reasons[i].Count > r.Reasons[j].Count })
	if len(r.Reasons) > 5 {
		r.Reasons = r.Reasons[:5]
	}
	return r
}
