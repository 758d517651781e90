// Package mtls is what a Go service imports to speak mutual TLS with mica
// certificates the correct way: [ServerConfig] and [ClientConfig] return a
// *tls.Config that
//
//   - takes this process's own certificate from a [Source] on every
//     handshake, so a renewed certificate is used without a restart
//     ([FileSource] reads the files the mica agent writes; package
//     mtls/workload follows the SPIFFE Workload API);
//   - verifies the peer's chain against the Source's current trust bundle,
//     with the right extended key usage (clientAuth for clients, serverAuth
//     for servers);
//   - rejects revoked certificates from the revocation feed held in memory
//     ([revocation.Set]) and, as a fallback, from CRLs fetched in the
//     background ([CRLChecker]) — the handshake never waits on the network;
//   - authorizes the peer by identity ([Authorizer]: exact names of their
//     own kind, path prefixes, trust domains, or any predicate), not by
//     host name;
//   - reports verifications by side and reason to a [Metrics] the caller
//     provides (package mtls/mtlsprom exports them to Prometheus).
//
// Verification is done by a [Verifier], in tls.Config.VerifyConnection,
// which Go calls on resumed handshakes too, so a session ticket never lets
// a peer in that a full handshake would refuse now; [Verifier.Verify] does
// the same without a TLS connection. Beyond crypto/x509, a Verifier
// enforces the RFC 5280 and CA/Browser Forum rules listed in
// docs/verifier.md, can pin the issuing CAs ([SPKIPin]) and treats CRLs
// as soft-fail or hard-fail ([CRLPolicy]). A refusal is a [*RejectError]
// with a [Reason]. A Verifier also keeps judging the
// connections it accepted: [Verifier.Run] closes those of peers revoked or
// denied later, and [Verifier.Middleware] refuses their requests.
//
// Handlers learn who called with [PeerIdentity] (HTTP) or
// [PeerFromConnectionState].
//
// The package imports the standard library, go-spiffe's spiffeid and
// mica's identity and revocation packages, nothing else.
//
// Start reading at [Options] and [ServerConfig]; the examples show a server
// and a client.
package mtls
