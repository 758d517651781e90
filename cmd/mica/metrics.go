package main

import (
	"crypto/x509"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/mica-pki/mica/internal/servercert"
	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/telemetry"
)

// metricsListen is where /metrics is served: the flag, else the config.
func (c *Config) metricsListen(flag string) string {
	if flag != "" {
		return flag
	}
	return *c.MetricsListen
}

// commitStatser is the optional ability of a store engine to report its
// group committer's running totals.
type commitStatser interface{ CommitStats() groupcommit.Stats }

// registerServerMetrics wires the gauges read at scrape time: inventory,
// CRL, OCSP, feed, audit log, CA and TLS certificate expiry, group commit.
func registerServerMetrics(p *parts, rev *revocationOutputs, certs *servercert.Certificate, log *slog.Logger) error {
	src := telemetry.Sources{
		Inventory: p.store.CertificatesByExpiry,
		CRL:       rev.crls.Freshness,
		RootCRL:   rev.rootCRL.Current,
		OCSP:      rev.ocsp.CacheStats,
		Feed:      rev.hub.Stats,
		Audit:     p.audit.Status,
		CAs: func() map[string]*x509.Certificate {
			t := p.rotation.Trust()
			return map[string]*x509.Certificate{"root": t.Roots[0], "intermediate": p.rotation.Signing(time.Time{}).Cert}
		},
		TLSCert:  certs.Leaf,
		Profiles: p.cfg.profileNames(),
		Logger:   log,
	}
	if cs, ok := p.store.(commitStatser); ok {
		src.Commits = cs.CommitStats
	}
	if _, err := telemetry.NewServerMetrics(p.registry, src); err != nil {
		return err
	}
	return registerDiscoveryMetrics(p, log)
}

// traced wraps the API in an OpenTelemetry HTTP server span when tracing
// is on, so the authority's spans hang under the request and a caller's
// trace context is continued; with tracing off the handler is unchanged.
func traced(p *parts, h http.Handler) http.Handler {
	if !p.tracing.Enabled() {
		return h
	}
	return otelhttp.NewHandler(h, "mica.api",
		otelhttp.WithTracerProvider(p.tracing.Provider()),
		otelhttp.WithPropagators(p.tracing.Propagator()),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()))
}
