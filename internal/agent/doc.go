// Package agent keeps a machine's certificate fresh without anyone touching
// it: it enrolls once with a bootstrap token, renews over mTLS at two thirds
// of the certificate's life (with jitter), retries with capped exponential
// backoff while the server is away, writes the credential directory
// (package credential: the files switch together, and any crash leaves the
// old set or the new), runs reload hooks, and keeps the trust bundles
// current.
//
// When renewal cannot succeed by retrying — the certificate expired or was
// revoked, the server does not know it, the identity is denied, the token
// is spent — the agent is blocked (Block): it says once what to do, sets
// mica_agent_blocked, stops asking the server in a loop, and recovers on
// its own when an admin writes a new token to its token file.
//
// Start reading at Agent.Run and loop. The schedule is package renewal's
// (RenewAt, Backoff, ExpiringSoon); blocks are in block.go; hooks in
// hooks.go. The SPIFFE Workload API that serves the credential to
// workloads, and decides which local process may have which identity, is a
// separate adapter (internal/workloadapi) that reads Agent.State.
package agent
