// Package mtls is what a Go service imports to speak mutual TLS with mica
// certificates the correct way: [ServerConfig] and [ClientConfig] return a
// *tls.Config that
//
//   - takes this process's own certificate from a [Source] on every
//     handshake, so a renewed certificate is used without a restart
//     ([FileSource] reads the files the mica agent writes, [WorkloadSource]
//     follows the SPIFFE Workload API);
//   - verifies the peer's chain against the Source's current trust bundle,
//     with the right extended key usage (clientAuth for clients, serverAuth
//     for servers);
//   - rejects revoked certificates from the revocation feed held in memory
//     ([revocation.Set]) and, as a fallback, from CRLs fetched in the
//     background ([CRLChecker]) — the handshake never waits on the network;
//   - authorizes the peer by identity ([Authorizer]: exact IDs, path
//     prefixes, trust domains, or any predicate), not by host name;
//   - counts handshakes by side, outcome and reason ([Metrics]).
//
// Verification runs in tls.Config.VerifyConnection, which Go calls on
// resumed handshakes too, so a session ticket never lets a peer in that a
// full handshake would refuse now. A refusal is a [*RejectError] with a
// [Reason].
//
// Handlers learn who called with [PeerIdentity] (HTTP) or
// [PeerFromConnectionState].
//
// Start reading at [Options] and [ServerConfig]; the examples show a server
// and a client.
package mtls
