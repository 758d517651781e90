package telemetry

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/policy"
)

// IssuanceMetrics counts what the authority reports: it is the
// authority's Observer, and its AuthFailed is the authority's AuthFailed
// hook (chained with the audit log's).
type IssuanceMetrics struct {
	profiles     profileSet
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	refusals     *prometheus.CounterVec
	revocations  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	breakGlass   prometheus.Counter
}

var _ authority.Observer = (*IssuanceMetrics)(nil)

// latencyBuckets span a lone issuance (about a millisecond) to a request
// queued behind a storm (seconds).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewIssuanceMetrics registers the issuance metrics with reg. profiles are
// the configured profile names; any other counts as "other".
func NewIssuanceMetrics(reg prometheus.Registerer, profiles []string) (*IssuanceMetrics, error) {
	m := &IssuanceMetrics{
		profiles: newProfileSet(profiles),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_issuance_requests_total",
			Help: "Issuance requests (enrollments, renewals, ACME orders, mica's own) by front door, profile and outcome (issued, refused, error).",
		}, []string{"door", "profile", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mica_issuance_duration_seconds",
			Help:    "Time from an issuance request reaching the authority to its answer, durable commit included.",
			Buckets: latencyBuckets,
		}, []string{"door", "profile", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_issuance_refusals_total",
			Help: "Issuance requests not answered with a certificate, by front door, profile and reason (the refusal's slug).",
		}, []string{"door", "profile", "reason"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_revocations_total",
			Help: "Certificates revoked through this server, by RFC 5280 reason.",
		}, []string{"reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_authentication_failures_total",
			Help: "Failed authentications (bad tokens, unknown, expired or revoked client certificates) by reason.",
		}, []string{"reason"}),
		breakGlass: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mica_break_glass_total",
			Help: "Break-glass role grants: an administrator gave itself a role without approvals, in an emergency.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.refusals, m.revocations, m.authFailures, m.breakGlass} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every door × profile × outcome starts at zero, as does every
	// revocation reason: increase() and rate() cannot see a series' first
	// sample, so a counter born at 1 would hide the first renewal of a
	// profile from the alerts and leave the error ratio empty.
	for _, door := range doors {
		for _, profile := range m.profiles.labels() {
			for _, outcome := range outcomes {
				m.requests.WithLabelValues(door, profile, outcome)
			}
		}
	}
	for _, r := range revocationReasons {
		if r != "" {
			m.revocations.WithLabelValues(r)
		}
	}
	return m, nil
}

// doors and outcomes are every value of the door and outcome labels.
var (
	doors    = []string{string(policy.MethodToken), string(policy.MethodRenew), string(policy.MethodACME), string(policy.MethodInternal)}
	outcomes = []string{authority.OutcomeIssued, authority.OutcomeRefused, authority.OutcomeError}
)

// ObserveIssuance implements authority.Observer.
func (m *IssuanceMetrics) ObserveIssuance(r authority.IssuanceResult) {
	door, profile := slug(string(r.Door)), m.profiles.label(r.Profile)
	m.requests.WithLabelValues(door, profile, r.Outcome).Inc()
	m.duration.WithLabelValues(door, profile, r.Outcome).Observe(r.Duration.Seconds())
	if r.Outcome != authority.OutcomeIssued {
		m.refusals.WithLabelValues(door, profile, slug(r.Reason)).Inc()
	}
}

// ObserveRevocations implements authority.Observer.
func (m *IssuanceMetrics) ObserveRevocations(reason, count int) {
	m.revocations.WithLabelValues(revocationReason(reason)).Add(float64(count))
}

// ObserveBreakGlass implements authority.BreakGlassObserver. The role is
// not a label: the audit log says who and which.
func (m *IssuanceMetrics) ObserveBreakGlass(string) { m.breakGlass.Inc() }

// AuthFailed counts a failed authentication; it has the shape of
// authority.AuthFailedFunc. The source address is not a label.
func (m *IssuanceMetrics) AuthFailed(_ netip.Addr, reason string) {
	m.authFailures.WithLabelValues(slug(reason)).Inc()
}
