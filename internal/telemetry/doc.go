// Package telemetry is how mica is watched: a Prometheus registry per
// process and the plain-HTTP listener that serves it (Registry, Server),
// the server's metrics (IssuanceMetrics, which the authority reports
// issuances and revocations to, and ServerMetrics, read at scrape time from
// the store, the revocation outputs, the audit log and the CA), and
// OpenTelemetry tracing (NewTracing: off by default, OTLP export when
// configured).
//
// No metric carries a per-certificate label: profile, front door, outcome,
// reason and expiry window are bounded sets, and a profile name the config
// does not know is counted as "other", so no client can mint label values.
// The names follow Prometheus conventions (base units, _total counters,
// _seconds); docs/operations.md lists them with the alerts built on them.
package telemetry
