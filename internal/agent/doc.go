// Package agent keeps a machine's certificate fresh without anyone touching
// it: it enrolls once with a bootstrap token, renews over mTLS at two thirds
// of the certificate's life (with jitter), retries with capped exponential
// backoff while the server is away, writes the key and certificates
// atomically, runs reload hooks, and keeps the trust bundles current.
//
// Start reading at Agent.Run. The schedule is package renewal's (RenewAt,
// Backoff, ExpiringSoon); files are in writer.go; hooks in hooks.go.
// The SPIFFE Workload API that serves the credential to workloads is a
// separate adapter (internal/workloadapi) that reads Agent.State.
package agent
