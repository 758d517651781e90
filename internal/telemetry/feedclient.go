package telemetry

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// FeedClientMetrics watch a verifier's connection to the revocation feed
// (mica proxy's, or any service's that follows the feed): Connected and
// Disconnected are the hooks of revocation.Config (OnConnect,
// OnDisconnect). A cut (or a first connection that fails) is logged once,
// when it happens, and the return once; failed reconnections in between
// are only counted.
type FeedClientMetrics struct {
	connected   prometheus.Gauge
	disconnects prometheus.Counter
	log         *slog.Logger

	mu    sync.Mutex
	state feedState
}

type feedState int

const (
	feedStarting feedState = iota
	feedUp
	feedDown
)

// NewFeedClientMetrics registers mica_revocation_feed_connected and
// mica_revocation_feed_disconnects_total with reg.
func NewFeedClientMetrics(reg prometheus.Registerer, log *slog.Logger) (*FeedClientMetrics, error) {
	m := &FeedClientMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mica_revocation_feed_connected",
			Help: "1 while the revocation feed stream is open, 0 while it is being (re)established.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mica_revocation_feed_disconnects_total",
			Help: "Revocation feed connections that ended or could not be made.",
		}),
		log: logger(log),
	}
	for _, c := range []prometheus.Collector{m.connected, m.disconnects} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Connected is revocation.Config.OnConnect.
func (m *FeedClientMetrics) Connected() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.connected.Set(1)
	if m.state != feedUp {
		m.log.Info("revocation feed connected")
	}
	m.state = feedUp
}

// Disconnected is revocation.Config.OnDisconnect.
func (m *FeedClientMetrics) Disconnected(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.connected.Set(0)
	m.disconnects.Inc()
	if m.state != feedDown {
		msg := "unknown"
		if err != nil {
			msg = err.Error()
		}
		what := "revocation feed cut"
		if m.state == feedStarting {
			what = "revocation feed unreachable"
		}
		m.log.Warn(what+": revocations reach this process only through CRLs (if configured) until it connects; retrying",
			slog.String("error", msg))
	}
	m.state = feedDown
}
