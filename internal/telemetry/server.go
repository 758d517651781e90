package telemetry

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/groupcommit"
)

// Sources are where ServerMetrics read the server's state at scrape time.
// Each is optional: a nil source's metrics are left out.
type Sources struct {
	// Inventory counts live certificates by profile and expiry window
	// (store.Store.CertificatesByExpiry). It is called at most once per
	// InventoryEvery, whatever the scrape rate.
	Inventory func(ctx context.Context, now time.Time) ([]store.ExpiryCount, error)
	// CRL is the freshness of the CRLs being served: the stalest one's
	// thisUpdate and nextUpdate, and the entries of all (crl.Set.Freshness);
	// ok is false before the first.
	CRL func() (thisUpdate, nextUpdate time.Time, entries int, ok bool)
	// RootCRL is the root's CRL as published (signed offline by `mica ca
	// root-crl`); ok is false while none is.
	RootCRL  func() (thisUpdate, nextUpdate time.Time, ok bool)
	OCSP     func() ocsp.CacheStats
	Feed     func() feed.Stats
	Audit    func() auditlog.Status
	Commits  func() groupcommit.Stats
	CAs      func() map[string]*x509.Certificate // by the ca label: "root", "intermediate" (the active ones: the CA rotates)
	TLSCert  func() *x509.Certificate            // the server's own, current
	Profiles []string                            // configured profile names; others count as "other"
	// InventoryEvery bounds the inventory query's rate; default 15s.
	InventoryEvery time.Duration
	Clock          func() time.Time
	Logger         *slog.Logger
}

// ServerMetrics is the server's state as gauges, read when scraped.
type ServerMetrics struct {
	src      Sources
	profiles profileSet

	inventory, crlAge, crlNext, crlEntries, rootCRLAge, rootCRLNext, ocspCached, ocspAge, ocspBytes, ocspLimit, ocspEvicted,
	feedSubs, feedLag, feedUnread, feedBlocked, feedSeq, feedDropped, auditLeaves, auditCheckpointLeaves, auditCheckpointAge,
	caExpiry, tlsExpiry, commits, committed, commitSeconds *prometheus.Desc

	mu          sync.Mutex
	invAt       time.Time // real time of the last inventory query
	invCache    []store.ExpiryCount
	invErr      error
	invCounting bool // a query runs in the background
}

// NewServerMetrics registers the server's gauges with reg.
func NewServerMetrics(reg prometheus.Registerer, src Sources) (*ServerMetrics, error) {
	if src.InventoryEvery <= 0 {
		src.InventoryEvery = 15 * time.Second
	}
	if src.Clock == nil {
		src.Clock = time.Now
	}
	src.Logger = logger(src.Logger)
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	m := &ServerMetrics{src: src, profiles: newProfileSet(src.Profiles),
		inventory: d("mica_live_certificates",
			"Live certificates (active, not expired) by profile and the window they expire within: 1h, 24h, 7d, 30d or more.",
			"profile", "expires_within"),
		crlAge:     d("mica_crl_age_seconds", "Seconds since the served CRL was produced (thisUpdate)."),
		crlNext:    d("mica_crl_next_update_seconds", "Seconds until the served CRL's nextUpdate; negative when relying parties hold an expired CRL."),
		crlEntries: d("mica_crl_entries", "Revoked certificates listed in the served CRLs, every issuer's."),
		rootCRLAge: d("mica_root_crl_age_seconds", "Seconds since the published root CRL was signed (thisUpdate); absent while none is published."),
		rootCRLNext: d("mica_root_crl_next_update_seconds",
			"Seconds until the published root CRL's nextUpdate; negative once relying parties hold an expired one: sign a new one with `mica ca root-crl`."),
		ocspCached: d("mica_ocsp_cached_responses", "Pre-signed OCSP responses in the cache."),
		ocspAge:    d("mica_ocsp_oldest_response_age_seconds", "Age of the stalest cached OCSP response; re-signing keeps it under half the validity (30m)."),
		ocspBytes:  d("mica_ocsp_cache_bytes", "Heap the cached OCSP responses take, as the cache accounts it against its bound."),
		ocspLimit:  d("mica_ocsp_cache_limit_bytes", "The OCSP response cache's bound (ocsp.cache_size)."),
		ocspEvicted: d("mica_ocsp_cache_evictions_total",
			"Cached OCSP responses dropped to make room; each is signed again when next asked for."),
		feedSubs: d("mica_feed_subscribers", "Open revocation feed streams."),
		feedLag: d("mica_feed_lag_events",
			"Changes the slowest revocation feed subscriber has not read: waiting in the server or in its connection's send queue."),
		feedUnread:  d("mica_feed_unread_bytes", "Most bytes one revocation feed subscriber's connection holds that the subscriber has not taken."),
		feedBlocked: d("mica_feed_write_blocked_seconds", "Longest time a write to one revocation feed subscriber has been waiting, now (0 when none waits)."),
		feedSeq:     d("mica_feed_seq", "Sequence number of the latest revocation change this server's feed applied; compare with verifiers' mica_mtls_revocations_seq."),
		feedDropped: d("mica_feed_subscribers_dropped_total", "Revocation feed subscribers cut off for falling too far behind."),
		auditLeaves: d("mica_audit_log_leaves", "Leaves (lifecycle events) in the audit log's Merkle tree."),
		auditCheckpointLeaves: d("mica_audit_checkpoint_leaves",
			"Size of the latest signed audit checkpoint; below mica_audit_log_leaves for long means checkpoints stopped."),
		auditCheckpointAge: d("mica_audit_checkpoint_age_seconds", "Seconds since the latest audit checkpoint was signed."),
		caExpiry:           d("mica_ca_certificate_expiry_seconds", "Seconds until a CA certificate expires.", "ca"),
		tlsExpiry:          d("mica_server_certificate_expiry_seconds", "Seconds until the API's own TLS certificate expires."),
		commits:            d("mica_store_commits_total", "Group-commit transactions."),
		committed:          d("mica_store_committed_operations_total", "Writes carried by group-commit transactions (issuances, events)."),
		commitSeconds:      d("mica_store_commit_seconds_total", "Time spent writing and committing group-commit transactions."),
	}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

// FeedMetrics is the revocation feed's delivery latency.
type FeedMetrics struct{ delivery prometheus.Histogram }

// NewFeedMetrics registers the feed's delivery histogram with reg.
func NewFeedMetrics(reg prometheus.Registerer) (*FeedMetrics, error) {
	m := &FeedMetrics{delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mica_feed_delivery_seconds",
		Help:    "Time from the revocation feed applying a change to writing it to one subscriber.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})}
	if err := reg.Register(m.delivery); err != nil {
		return nil, err
	}
	return m, nil
}

// Delivered is the feed Hub's Delivered hook.
func (m *FeedMetrics) Delivered(latency time.Duration) { m.delivery.Observe(latency.Seconds()) }

// Describe implements prometheus.Collector.
func (m *ServerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.inventory, m.crlAge, m.crlNext, m.crlEntries, m.rootCRLAge, m.rootCRLNext,
		m.ocspCached, m.ocspAge, m.ocspBytes, m.ocspLimit, m.ocspEvicted, m.feedSubs, m.feedLag, m.feedUnread, m.feedBlocked, m.feedSeq, m.feedDropped, m.auditLeaves, m.auditCheckpointLeaves, m.auditCheckpointAge,
		m.caExpiry, m.tlsExpiry, m.commits, m.committed, m.commitSeconds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *ServerMetrics) Collect(ch chan<- prometheus.Metric) {
	now := m.src.Clock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	if m.src.Inventory != nil {
		m.collectInventory(ch, now)
	}
	if m.src.CRL != nil {
		if this, next, entries, ok := m.src.CRL(); ok {
			gauge(m.crlAge, now.Sub(this).Seconds())
			gauge(m.crlNext, next.Sub(now).Seconds())
			gauge(m.crlEntries, float64(entries))
		}
	}
	if m.src.RootCRL != nil {
		if this, next, ok := m.src.RootCRL(); ok {
			gauge(m.rootCRLAge, now.Sub(this).Seconds())
			gauge(m.rootCRLNext, next.Sub(now).Seconds())
		}
	}
	if m.src.OCSP != nil {
		st := m.src.OCSP()
		gauge(m.ocspCached, float64(st.Responses))
		age := 0.0
		if !st.Oldest.IsZero() {
			age = now.Sub(st.Oldest).Seconds()
		}
		gauge(m.ocspAge, age)
		gauge(m.ocspBytes, float64(st.Bytes))
		gauge(m.ocspLimit, float64(st.MaxBytes))
		counter(m.ocspEvicted, float64(st.Evicted))
	}
	if m.src.Feed != nil {
		st := m.src.Feed()
		gauge(m.feedSubs, float64(st.Subscribers))
		gauge(m.feedLag, float64(st.MaxLag))
		gauge(m.feedUnread, float64(st.MaxUnreadBytes))
		gauge(m.feedBlocked, st.MaxWriteBlocked.Seconds())
		gauge(m.feedSeq, float64(st.Seq))
		counter(m.feedDropped, float64(st.Dropped))
	}
	if m.src.Audit != nil {
		st := m.src.Audit()
		gauge(m.auditLeaves, float64(st.Leaves))
		gauge(m.auditCheckpointLeaves, float64(st.CheckpointSize))
		if !st.CheckpointTime.IsZero() {
			gauge(m.auditCheckpointAge, now.Sub(st.CheckpointTime).Seconds())
		}
	}
	if m.src.CAs != nil {
		for name, c := range m.src.CAs() {
			gauge(m.caExpiry, c.NotAfter.Sub(now).Seconds(), name)
		}
	}
	if m.src.TLSCert != nil {
		if c := m.src.TLSCert(); c != nil {
			gauge(m.tlsExpiry, c.NotAfter.Sub(now).Seconds())
		}
	}
	if m.src.Commits != nil {
		st := m.src.Commits()
		counter(m.commits, float64(st.Batches))
		counter(m.committed, float64(st.Items))
		counter(m.commitSeconds, st.CommitSeconds)
	}
}

// collectInventory emits every configured profile (and "other") in every
// window, zeros included, so the series are the same whatever is issued.
func (m *ServerMetrics) collectInventory(ch chan<- prometheus.Metric, now time.Time) {
	counts, err := m.inventoryCounts(now)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(m.inventory, err)
		return
	}
	byLabel := map[[2]string]int64{}
	for p := range m.profiles {
		for _, w := range store.ExpiryWindows {
			byLabel[[2]string{p, string(w.Window)}] = 0
		}
	}
	for _, w := range store.ExpiryWindows {
		byLabel[[2]string{ProfileOther, string(w.Window)}] = 0
	}
	for _, c := range counts {
		byLabel[[2]string{m.profiles.label(c.Profile), slug(string(c.Window))}] += c.Count
	}
	for l, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(m.inventory, prometheus.GaugeValue, float64(n), l[0], l[1])
	}
}

// inventoryCounts runs the aggregate query at most once per
// InventoryEvery. Only the first scrape waits for it: once the answer is
// older than that, a scrape starts a new count in the background and gets
// the last answer, because at a million certificates the count takes
// half a second on PostgreSQL and a scrape must not.
func (m *ServerMetrics) inventoryCounts(now time.Time) ([]store.ExpiryCount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.invAt.IsZero() && time.Since(m.invAt) < m.src.InventoryEvery:
	case m.invAt.IsZero():
		m.invCache, m.invErr = m.countInventory(now)
		m.invAt = time.Now()
	case !m.invCounting:
		m.invCounting = true
		go func() {
			counts, err := m.countInventory(now)
			m.mu.Lock()
			defer m.mu.Unlock()
			m.invCache, m.invErr, m.invAt, m.invCounting = counts, err, time.Now(), false
		}()
	}
	return m.invCache, m.invErr
}

// countInventory runs the inventory query, bounded.
func (m *ServerMetrics) countInventory(now time.Time) ([]store.ExpiryCount, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, err := m.src.Inventory(ctx, now)
	if err != nil {
		m.src.Logger.Warn("telemetry: counting the inventory for metrics failed", slog.String("error", err.Error()))
	}
	return counts, err
}
