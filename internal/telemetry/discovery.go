package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/store"
)

// DiscoverySources are where DiscoveryMetrics read the discovered
// certificates at scrape time (store.DiscoveryStore's aggregates).
type DiscoverySources struct {
	ByExpiry func(ctx context.Context, now time.Time) ([]store.DiscoveredCount, error)
	Findings func(ctx context.Context) ([]store.FindingCount, error)
	// Classes and Findings list every label value, so that each series
	// exists (at zero) before anything is found.
	ClassNames, FindingNames []string
	// Every bounds the queries' rate; default 15s.
	Every  time.Duration
	Clock  func() time.Time
	Logger *slog.Logger
}

// DiscoveryMetrics are the discovered certificates still seen, by issuer
// class and expiry window, and by finding: never a label per certificate.
type DiscoveryMetrics struct {
	src                DiscoverySources
	certs, withFinding *prometheus.Desc

	mu       sync.Mutex
	at       time.Time
	counts   []store.DiscoveredCount
	findings []store.FindingCount
	err      error
}

// NewDiscoveryMetrics registers the discovery gauges with reg.
func NewDiscoveryMetrics(reg prometheus.Registerer, src DiscoverySources) (*DiscoveryMetrics, error) {
	if src.Every <= 0 {
		src.Every = 15 * time.Second
	}
	if src.Clock == nil {
		src.Clock = time.Now
	}
	src.Logger = logger(src.Logger)
	m := &DiscoveryMetrics{src: src,
		certs: prometheus.NewDesc("mica_discovered_certificates",
			"Certificates found deployed and still seen, by issuer class (mica, external, self-signed) and the window they expire within: expired, 1h, 24h, 7d, 30d or more.",
			[]string{"class", "expires_within"}, nil),
		withFinding: prometheus.NewDesc("mica_discovered_certificates_with_finding",
			"Certificates found deployed and still seen that have a finding (weak-key, missing-intermediate, key-world-readable, …).",
			[]string{"finding"}, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *DiscoveryMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.certs
	ch <- m.withFinding
}

// Collect implements prometheus.Collector.
func (m *DiscoveryMetrics) Collect(ch chan<- prometheus.Metric) {
	counts, findings, err := m.read(m.src.Clock())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(m.certs, err)
		return
	}
	byLabel := map[[2]string]int64{}
	windows := append([]store.ExpiryWindow{store.ExpiredWindow}, windowsOf()...)
	for _, c := range m.src.ClassNames {
		for _, w := range windows {
			byLabel[[2]string{c, string(w)}] = 0
		}
	}
	for _, c := range counts {
		byLabel[[2]string{slug(c.Class), slug(string(c.Window))}] += c.Count
	}
	for l, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(m.certs, prometheus.GaugeValue, float64(n), l[0], l[1])
	}
	byFinding := map[string]int64{}
	for _, f := range m.src.FindingNames {
		byFinding[f] = 0
	}
	for _, f := range findings {
		if _, known := byFinding[f.Finding]; known {
			byFinding[f.Finding] = f.Count
		}
	}
	for f, n := range byFinding {
		ch <- prometheus.MustNewConstMetric(m.withFinding, prometheus.GaugeValue, float64(n), f)
	}
}

func windowsOf() []store.ExpiryWindow {
	var out []store.ExpiryWindow
	for _, w := range store.ExpiryWindows {
		out = append(out, w.Window)
	}
	return out
}

// read runs the aggregates at most once per Every.
func (m *DiscoveryMetrics) read(now time.Time) ([]store.DiscoveredCount, []store.FindingCount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at.IsZero() && time.Since(m.at) < m.src.Every {
		return m.counts, m.findings, m.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.counts, m.err = m.src.ByExpiry(ctx, now)
	if m.err == nil {
		m.findings, m.err = m.src.Findings(ctx)
	}
	m.at = time.Now()
	if m.err != nil {
		m.src.Logger.Warn("telemetry: counting discovered certificates for metrics failed", slog.String("error", m.err.Error()))
	}
	return m.counts, m.findings, m.err
}
