package proxy

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's own series. Labels are bounded: the listener name
// (from the config), the mode, and the status class; never an identity or a
// certificate.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	denied   *prometheus.CounterVec
	upstream *prometheus.CounterVec
	reloads  *prometheus.CounterVec
}

// NewMetrics registers with reg:
//
//	mica_proxy_requests_total{listener,mode,code}           code is the class: 2xx, 4xx, 5xx…
//	mica_proxy_request_duration_seconds{listener,mode}      histogram, request in to response done
//	mica_proxy_authorization_denied_total{listener}         verified peers refused by a rule (403)
//	mica_proxy_upstream_errors_total{listener}              backend or upstream unreachable or refused (502)
//	mica_proxy_config_reloads_total{result="success|failure"}
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("proxy: NewMetrics needs a prometheus.Registerer")
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_proxy_requests_total",
			Help: "Requests handled by mica proxy, by listener, mode and status class.",
		}, []string{"listener", "mode", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mica_proxy_request_duration_seconds",
			Help: "Time from a request's arrival to the end of its response, including the backend's time.",
			// From half a millisecond (the proxy's own cost) to half a minute.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17),
		}, []string{"listener", "mode"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_proxy_authorization_denied_total",
			Help: "Requests from verified peers that the listener's rules refused (403).",
		}, []string{"listener"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_proxy_upstream_errors_total",
			Help: "Requests the backend or upstream did not answer: unreachable, timed out, or refused in the TLS handshake (502).",
		}, []string{"listener"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_proxy_config_reloads_total",
			Help: "Configuration reloads, by result.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.denied, m.upstream, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, errors.New("proxy: registering metrics: " + err.Error() + " (one Metrics per registry)")
		}
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m, nil
}

// Reloaded counts a configuration reload.
func (m *Metrics) Reloaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
}

// listenerMetrics are one listener's series, resolved once per config.
type listenerMetrics struct {
	requests *prometheus.CounterVec // curried to listener and mode
	duration prometheus.Observer
	denied   prometheus.Counter
	upstream prometheus.Counter
}

func (m *Metrics) forListener(name string, mode Mode) *listenerMetrics {
	if m == nil {
		return nil
	}
	return &listenerMetrics{
		requests: m.requests.MustCurryWith(prometheus.Labels{"listener": name, "mode": string(mode)}),
		duration: m.duration.WithLabelValues(name, string(mode)),
		denied:   m.denied.WithLabelValues(name),
		upstream: m.upstream.WithLabelValues(name),
	}
}

func (lm *listenerMetrics) request(status int, seconds float64) {
	if lm == nil {
		return
	}
	lm.requests.WithLabelValues(strconv.Itoa(status/100) + "xx").Inc()
	lm.duration.Observe(seconds)
}

func (lm *listenerMetrics) deny() {
	if lm != nil {
		lm.denied.Inc()
	}
}

func (lm *listenerMetrics) upstreamError() {
	if lm != nil {
		lm.upstream.Inc()
	}
}
