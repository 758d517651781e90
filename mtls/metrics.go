package mtls

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/revocation"
)

// Sides of a handshake, the "side" label: which end did the verifying.
const (
	sideServer = "server"
	sideClient = "client"
)

// Metrics counts handshakes by side, outcome and reason, and reports the
// freshness of the revocation data the configs use. Labels are bounded: no
// series per certificate or identity. One Metrics may serve several
// configs; the revocation gauges follow the last Set and CRLChecker a
// config was built with.
type Metrics struct {
	handshakes map[string]map[Reason]prometheus.Counter
	closed     *prometheus.CounterVec
	refused    *prometheus.CounterVec
	set        atomic.Pointer[revocation.Set]
	crl        atomic.Pointer[CRLChecker]
	now        func() time.Time

	seqDesc, crlAgeDesc, crlErrDesc *prometheus.Desc
}

// NewMetrics registers the mtls metrics with reg:
//
//	mica_mtls_handshakes_total{side="server|client",outcome="accepted|rejected",reason}
//	mica_mtls_revocations_seq       sequence number of the revocation feed's last change applied
//	mica_mtls_crl_age_seconds       age of the oldest CRL held (since its thisUpdate)
//	mica_mtls_crl_fetch_errors_total
//	mica_mtls_connections_closed_total{reason}  live connections closed because their peer was refused later
//	mica_mtls_requests_refused_total{reason}    requests refused by Verifier.Middleware
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("mtls: NewMetrics needs a prometheus.Registerer (prometheus.DefaultRegisterer or your own registry)")
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mica_mtls_handshakes_total",
		Help: "TLS handshakes verified by mica's mtls package, by the verifying side, outcome and reason.",
	}, []string{"side", "outcome", "reason"})
	m := &Metrics{
		handshakes: map[string]map[Reason]prometheus.Counter{},
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_mtls_connections_closed_total",
			Help: "Live connections closed because their peer was revoked or denied after the handshake.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_mtls_requests_refused_total",
			Help: "HTTP requests refused by the mtls middleware because their client is refused now.",
		}, []string{"reason"}),
		now: time.Now,
		seqDesc: prometheus.NewDesc("mica_mtls_revocations_seq",
			"Sequence number of the last revocation feed change applied to the set the handshakes consult.", nil, nil),
		crlAgeDesc: prometheus.NewDesc("mica_mtls_crl_age_seconds",
			"Seconds since the thisUpdate of the oldest CRL held by the CRL fallback.", nil, nil),
		crlErrDesc: prometheus.NewDesc("mica_mtls_crl_fetch_errors_total",
			"CRL fetches that failed (unreachable, unreadable or not signed by a trusted issuer).", nil, nil),
	}
	for _, side := range []string{sideServer, sideClient} {
		m.handshakes[side] = map[Reason]prometheus.Counter{}
		for _, r := range reasons {
			outcome := "rejected"
			if r == ReasonOK {
				outcome = "accepted"
			}
			m.handshakes[side][r] = vec.WithLabelValues(side, outcome, string(r))
		}
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{vec, m.closed, m.refused, m} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, errors.New("mtls: registering the metrics: " + err.Error() + " (one Metrics per registry)")
		}
		done = append(done, c)
	}
	return m, nil
}

func (m *Metrics) connectionClosed(r Reason) {
	if m != nil {
		m.closed.WithLabelValues(string(r)).Inc()
	}
}

func (m *Metrics) requestRefused(r Reason) {
	if m != nil {
		m.refused.WithLabelValues(string(r)).Inc()
	}
}

func (m *Metrics) count(side string, r Reason) {
	if m == nil {
		return
	}
	m.handshakes[side][r].Inc()
}

// watch makes the gauges follow a config's revocation sources.
func (m *Metrics) watch(set *revocation.Set, crl *CRLChecker) {
	if m == nil {
		return
	}
	if set != nil {
		m.set.Store(set)
	}
	if crl != nil {
		m.crl.Store(crl)
	}
}

// Describe implements prometheus.Collector for the gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.seqDesc
	ch <- m.crlAgeDesc
	ch <- m.crlErrDesc
}

// Collect implements prometheus.Collector: the gauges are read at scrape
// time, and absent while there is nothing to report.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if s := m.set.Load(); s != nil {
		ch <- prometheus.MustNewConstMetric(m.seqDesc, prometheus.GaugeValue, float64(s.Seq()))
	}
	if c := m.crl.Load(); c != nil {
		if oldest, ok := c.oldestThisUpdate(); ok {
			ch <- prometheus.MustNewConstMetric(m.crlAgeDesc, prometheus.GaugeValue, m.now().Sub(oldest).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(m.crlErrDesc, prometheus.CounterValue, float64(c.fetchErrors.Load()))
	}
}
