// Package acme is mica's RFC 8555 front door: the ACME protocol that
// certbot, lego and other standard clients speak, served under /acme/ on
// the API listener. It only translates: accounts, orders, authorizations and
// challenges are protocol state kept in the store (store.ACMEStore); what
// may be issued, to whom and for how long is decided by the authority and
// its policy, reached through authority.IssueACME with the profile the
// config names for ACME.
//
// Start reading at New (the routes), then post in server.go (every POST:
// JWS → key → signature → URL → nonce), jws.go (the parser, fuzzed), and
// order.go (newOrder → authorizations → challenges → finalize → download).
// Challenge validation (http-01, dns-01, tls-alpn-01 of RFC 8737) is in
// validate.go; errors become RFC 8555 problem documents in problem.go.
// ACME Renewal Information (RFC 9773) is in ari.go.
package acme
