// Package rotation rotates mica's CA while it serves: intermediates (and,
// with an online root, the root itself) move through slots prepared →
// active → retired → removed, a state machine kept in the database so that
// every server sharing it agrees on which CA signs.
//
// Start with [Next], the pure decision: given the slots and the time, what
// step is due. Its thresholds are named in [Thresholds]: the next CA is
// prepared at half of the active one's life (PrepareAt), published in the
// trust bundle for at least Propagation (by default the longest leaf
// lifetime any profile allows, so that every holder has renewed, and so
// fetched the new bundle, before anything is signed by it) and only then
// activated; a retired CA is removed once the last certificate it signed
// has expired. [Manager] runs the steps against the store (one server
// prepares, by compare-and-swap; all activate the same slot), opens the
// keys through package custody and signs through package issuance, and is
// the authority's [authority.Issuers]: the signing CA for each leaf, and
// the trust bundle with its chains and cross-certificates.
//
// A root rollover makes a new root, cross-signed both ways (the new root
// certified by the old key, the old by the new), so that a verifier that
// trusts either root accepts chains from both while they overlap; then it
// prepares the next intermediate under the new root.
package rotation
