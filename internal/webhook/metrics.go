package webhook

import "github.com/prometheus/client_golang/prometheus"

// metrics are labelled by endpoint name only: the configured endpoints are
// a small, fixed set.
type metrics struct {
	deliveries  *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lag         *prometheus.GaugeVec
	oldest      *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	leader      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, endpoints []string) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_webhook_deliveries_total",
			Help: "Webhook delivery attempts by endpoint and outcome: delivered, failed (to be retried), dead_lettered (given up).",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mica_webhook_delivery_duration_seconds",
			Help:    "Time of one webhook delivery attempt, to the receiver's answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mica_webhook_lag_events",
			Help: "Audit log events after the endpoint's cursor (not yet handled, whether or not its filter selects them), at the last read.",
		}, []string{"endpoint"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mica_webhook_oldest_pending_seconds",
			Help: "Age of the oldest event the endpoint has still to take; 0 when it is caught up.",
		}, []string{"endpoint"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mica_webhook_last_success_timestamp_seconds",
			Help: "When this server last delivered an event to the endpoint (Unix seconds); 0 if never.",
		}, []string{"endpoint"}),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mica_webhook_leader",
			Help: "1 when this server holds the endpoint's lease and delivers to it; replicas sharing a database take turns.",
		}, []string{"endpoint"}),
	}
	// Every series exists from the start, so that alerts and dashboards
	// see zeros rather than nothing.
	for _, ep := range endpoints {
		for _, o := range []string{"delivered", "failed", "dead_lettered"} {
			m.deliveries.WithLabelValues(ep, o)
		}
		m.duration.WithLabelValues(ep)
		m.lag.WithLabelValues(ep)
		m.oldest.WithLabelValues(ep)
		m.lastSuccess.WithLabelValues(ep)
		m.leader.WithLabelValues(ep)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.duration, m.lag, m.oldest, m.lastSuccess, m.leader} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
