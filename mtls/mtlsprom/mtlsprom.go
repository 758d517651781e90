// Package mtlsprom exports what an mtls.Verifier observes as Prometheus
// metrics: pass [New]'s result as mtls.VerifierConfig.Metrics (or
// mtls.Options.Metrics). It lives apart from package mtls so that a
// service importing mtls pulls in no metrics library unless it wants one.
package mtlsprom

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

// Metrics counts verifications by side, outcome and reason, and reports
// the freshness of the revocation data the Verifiers use. Labels are
// bounded: no series per certificate or identity. One Metrics may serve
// several Verifiers; the revocation gauges follow the last Set and
// CRLChecker a Verifier was built with.
type Metrics struct {
	handshakes map[string]map[mtls.Reason]prometheus.Counter
	closed     *prometheus.CounterVec
	refused    *prometheus.CounterVec
	set        atomic.Pointer[revocation.Set]
	crl        atomic.Pointer[mtls.CRLChecker]
	now        func() time.Time

	seqDesc, crlAgeDesc, crlErrDesc, crlInvalidDesc *prometheus.Desc
}

var _ mtls.Metrics = (*Metrics)(nil)
var _ mtls.RevocationWatcher = (*Metrics)(nil)

// New registers the metrics with reg:
//
//	mica_mtls_handshakes_total{side="server|client|verify",outcome="accepted|rejected",reason}
//	mica_mtls_connections_closed_total{reason}  live connections closed because their peer was refused later
//	mica_mtls_requests_refused_total{reason}    requests refused by Verifier.VerifyRequest (Middleware)
//	mica_mtls_revocations_seq                   sequence number of the revocation feed's last change applied
//	mica_mtls_crl_age_seconds                   age of the oldest CRL held (since its thisUpdate)
//	mica_mtls_crl_fetch_errors_total            CRL fetches that failed
//	mica_mtls_crl_invalid_total                 CRLs fetched or loaded that were refused as invalid
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("mtlsprom: New needs a prometheus.Registerer (prometheus.DefaultRegisterer or your own registry)")
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mica_mtls_handshakes_total",
		Help: "Peers verified by mica's mtls package (TLS handshakes, and Verify calls as side=verify), by the verifying side, outcome and reason.",
	}, []string{"side", "outcome", "reason"})
	m := &Metrics{
		handshakes: map[string]map[mtls.Reason]prometheus.Counter{},
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
		crlInvalidDesc: prometheus.NewDesc("mica_mtls_crl_invalid_total",
			"CRLs refused as invalid: unparsable, wrongly signed, issuer without cRLSign, missing or critical CRL number, number going back.", nil, nil),
	}
	for _, side := range []string{mtls.SideServer, mtls.SideClient, mtls.SideVerify} {
		m.handshakes[side] = map[mtls.Reason]prometheus.Counter{}
		for _, r := range mtls.Reasons() {
			outcome := "rejected"
			if r == mtls.ReasonOK {
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
			return nil, errors.New("mtlsprom: registering the metrics: " + err.Error() + " (one Metrics per registry)")
		}
		done = append(done, c)
	}
	return m, nil
}

// Verified implements mtls.Metrics.
func (m *Metrics) Verified(side string, r mtls.Reason) {
	if m == nil {
		return
	}
	if c, ok := m.handshakes[side][r]; ok {
		c.Inc()
	}
}

// ConnectionClosed implements mtls.Metrics.
func (m *Metrics) ConnectionClosed(r mtls.Reason) {
	if m != nil {
		m.closed.WithLabelValues(string(r)).Inc()
	}
}

// RequestRefused implements mtls.Metrics.
func (m *Metrics) RequestRefused(r mtls.Reason) {
	if m != nil {
		m.refused.WithLabelValues(string(r)).Inc()
	}
}

// WatchRevocations implements mtls.RevocationWatcher: the gauges follow
// these sources.
func (m *Metrics) WatchRevocations(set *revocation.Set, crl *mtls.CRLChecker) {
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
	ch <- m.crlInvalidDesc
}

// Collect implements prometheus.Collector: the gauges are read at scrape
// time, and absent while there is nothing to report.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if s := m.set.Load(); s != nil {
		ch <- prometheus.MustNewConstMetric(m.seqDesc, prometheus.GaugeValue, float64(s.Seq()))
	}
	if c := m.crl.Load(); c != nil {
		st := c.Stats()
		if !st.OldestThisUpdate.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.crlAgeDesc, prometheus.GaugeValue, m.now().Sub(st.OldestThisUpdate).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(m.crlErrDesc, prometheus.CounterValue, float64(st.FetchErrors))
		ch <- prometheus.MustNewConstMetric(m.crlInvalidDesc, prometheus.CounterValue, float64(st.Invalid))
	}
}
