package limits

import (
	"fmt"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the guard's counters. Their labels are bounded by the config:
// scope and kind are fixed sets, profile is a configured profile or
// "unknown", action is alert or refuse.
type metrics struct {
	rateLimited *prometheus.CounterVec
	anomalies   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, r *Rules, trackedKeys func() int) (metrics, error) {
	m := metrics{
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_rate_limited_total",
			Help: "Certificate requests refused by a rate limit, by scope (identity, requester, source) and profile.",
		}, []string{"scope", "profile"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_anomalies_total",
			Help: "Requests the anomaly detector flagged, by kind (renewal_storm, issuance_burst, unexpected_network, unexpected_issuer), profile and action (alert, refuse).",
		}, []string{"kind", "profile", "action"}),
	}
	// Every series a dashboard or alert expects exists from the start at
	// zero, so that increase() sees the first event.
	profiles := append(slices.Sorted(maps.Keys(r.known)), unknownProfile)
	for _, p := range profiles {
		for _, scope := range []string{"identity", "requester", "source"} {
			m.rateLimited.WithLabelValues(scope, p)
		}
		pr := r.rules(p)
		for kind, action := range map[string]Action{KindRenewalStorm: pr.storm, KindIssuanceBurst: pr.burst, KindUnexpectedNetwork: pr.network} {
			if action != ActionOff {
				m.anomalies.WithLabelValues(kind, p, string(action))
			}
		}
	}
	m.anomalies.WithLabelValues(KindUnexpectedIssuer, unknownProfile, string(ActionRefuse))
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mica_limits_tracked_keys",
		Help: "Identities, requesters, sources and detector keys held in memory by the rate limits and anomaly detectors (each table at most limits.max_keys).",
	}, func() float64 { return float64(trackedKeys()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{m.rateLimited, m.anomalies, keys} {
			if err := reg.Register(c); err != nil {
				return metrics{}, fmt.Errorf("limits: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
