package agent

import (
	"github.com/mica-pki/mica/internal/renewal"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics. The only label is identity,
// bounded by the agent's few identities; never a serial or fingerprint.
type Metrics struct {
	renewals      *prometheus.CounterVec
	failures      *prometheus.CounterVec
	bundleUpdates prometheus.Counter
	agents        []*Agent

	expiry       *prometheus.Desc
	sinceRenewal *prometheus.Desc
	expiring     *prometheus.Desc
	blocked      *prometheus.Desc
	notBefore    *prometheus.Desc
	notAfter     *prometheus.Desc
}

// NewMetrics registers the agent's metrics with reg (a registry of the
// caller's, not the global default: no global mutable state).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_agent_renewals_total", Help: "Certificates obtained (enrollments and renewals).",
		}, []string{"identity"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_agent_renewal_failures_total", Help: "Failed enrollment or renewal attempts.",
		}, []string{"identity"}),
		bundleUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mica_agent_bundle_updates_total", Help: "Times the trust bundle changed and was rewritten.",
		}),
		expiry: prometheus.NewDesc("mica_agent_certificate_expiry_seconds",
			"Seconds until the current certificate expires (negative: expired).", []string{"identity"}, nil),
		sinceRenewal: prometheus.NewDesc("mica_agent_seconds_since_last_renewal",
			"Seconds since this agent last obtained a certificate (absent until it has).", []string{"identity"}, nil),
		expiring: prometheus.NewDesc("mica_agent_certificate_expiring",
			"1 when less than a sixth of the certificate's life is left without a renewal: alert on it.", []string{"identity"}, nil),
		blocked: prometheus.NewDesc("mica_agent_blocked",
			"1 when renewal cannot succeed without an admin, by reason (expired, revoked, unknown, chain-ended, denied, refused, token); the agent's log says what to do. Alert on it.",
			[]string{"identity", "reason"}, nil),
		// The validity as timestamps lets an alert compute the fraction of
		// the lifetime left at evaluation time, which works for a 5-minute
		// certificate as for a 90-day one.
		notBefore: prometheus.NewDesc("mica_agent_certificate_not_before_timestamp_seconds",
			"The current certificate's notBefore, in seconds since the epoch.", []string{"identity"}, nil),
		notAfter: prometheus.NewDesc("mica_agent_certificate_not_after_timestamp_seconds",
			"The current certificate's notAfter, in seconds since the epoch.", []string{"identity"}, nil),
	}
	for _, c := range []prometheus.Collector{m.renewals, m.failures, m.bundleUpdates, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) watch(a *Agent) { m.agents = append(m.agents, a) }

// Describe implements prometheus.Collector for the gauges read at scrape
// time, so "seconds until expiry" is always current.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.expiry
	ch <- m.sinceRenewal
	ch <- m.expiring
	ch <- m.blocked
	ch <- m.notBefore
	ch <- m.notAfter
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, a := range m.agents {
		s, _ := a.State()
		// Every reason exists at zero, so that a rule sees the change.
		label := a.label()
		for _, b := range Blocks {
			v := 0.0
			if s.Blocked == b {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.blocked, prometheus.GaugeValue, v, label, string(b))
		}
		if s.Credential == nil {
			continue
		}
		now, leaf, id := a.clock.Now(), s.Credential.Chain[0], s.Credential.ID
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, leaf.NotAfter.Sub(now).Seconds(), id)
		if !s.LastRenewal.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.sinceRenewal, prometheus.GaugeValue, now.Sub(s.LastRenewal).Seconds(), id)
		}
		v := 0.0
		if renewal.ExpiringSoon(now, leaf.NotBefore, leaf.NotAfter) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.expiring, prometheus.GaugeValue, v, id)
		ch <- prometheus.MustNewConstMetric(m.notBefore, prometheus.GaugeValue, float64(leaf.NotBefore.Unix()), id)
		ch <- prometheus.MustNewConstMetric(m.notAfter, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), id)
	}
}
