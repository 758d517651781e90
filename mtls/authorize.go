package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
)

// Authorizer decides whether a verified peer may talk to us: it returns nil
// to allow and an error saying why not to refuse. chain is the verified
// chain, leaf first, root last. It runs on every handshake and must not
// block.
type Authorizer func(id identity.Identity, chain []*x509.Certificate) error

// ErrUnauthorized is what the Authorizers of this package wrap when they
// refuse.
var ErrUnauthorized = errors.New("mtls: identity not authorized")

// AuthorizeIDs allows exactly these names: SPIFFE IDs
// ("spiffe://example.org/billing/api"), DNS names or IP addresses, each
// read once with [identity.ParseName]. A name keeps its kind: a configured
// IP address is matched only against the peer's IP SANs, a SPIFFE ID only
// against its URI SAN, a DNS name only against its DNS SANs. A peer is
// allowed when it carries any of the names. A name that does not parse
// refuses every peer (the error says which), so a typo never widens a rule.
func AuthorizeIDs(ids ...string) Authorizer {
	names := make([]identity.Name, 0, len(ids))
	var bad []error
	for _, s := range ids {
		n, err := identity.ParseName(s)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		names = append(names, n)
	}
	if len(bad) > 0 {
		err := fmt.Errorf("%w: the allowed names are not all valid, fix the configuration: %w", ErrUnauthorized, errors.Join(bad...))
		return func(identity.Identity, []*x509.Certificate) error { return err }
	}
	return AuthorizeNames(names...)
}

// AuthorizeNames allows a peer that carries any of these names, each
// compared only with the peer's names of its own kind ([identity.Identity.Has]).
func AuthorizeNames(names ...identity.Name) Authorizer {
	names = slices.Clone(names)
	return func(id identity.Identity, _ []*x509.Certificate) error {
		for _, n := range names {
			if !n.IsZero() && id.Has(n) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s carries none of the %d allowed names", ErrUnauthorized, id, len(names))
	}
}

// AuthorizePathPrefixes allows SPIFFE IDs at or below these prefixes:
// "spiffe://example.org/ns/prod/" (or without the trailing slash) allows
// spiffe://example.org/ns/prod and spiffe://example.org/ns/prod/sa/web, but
// not spiffe://example.org/ns/prod-evil. Peers without a SPIFFE ID are
// refused.
func AuthorizePathPrefixes(prefixes ...string) Authorizer {
	type prefix struct {
		td   spiffeid.TrustDomain
		path string // no trailing slash; "" is the whole trust domain
	}
	var ps []prefix
	var bad []string
	for _, p := range prefixes {
		id, err := spiffeid.FromString(strings.TrimSuffix(p, "/"))
		if err != nil {
			bad = append(bad, p)
			continue
		}
		ps = append(ps, prefix{td: id.TrustDomain(), path: id.Path()})
	}
	return func(id identity.Identity, _ []*x509.Certificate) error {
		if len(bad) > 0 {
			return fmt.Errorf("%w: the path prefixes %q are not SPIFFE IDs: fix the configuration", ErrUnauthorized, bad)
		}
		if id.SPIFFE.IsZero() {
			return fmt.Errorf("%w: %s has no SPIFFE ID, and only SPIFFE path prefixes are allowed", ErrUnauthorized, id)
		}
		path := id.SPIFFE.Path()
		for _, p := range ps {
			if id.SPIFFE.TrustDomain() == p.td && (path == p.path || strings.HasPrefix(path, p.path+"/")) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is under none of the allowed path prefixes", ErrUnauthorized, id.SPIFFE)
	}
}

// AuthorizeTrustDomains allows any SPIFFE ID in these trust domains
// ("example.org" or "spiffe://example.org").
func AuthorizeTrustDomains(tds ...string) Authorizer {
	allowed := make(map[spiffeid.TrustDomain]bool, len(tds))
	var bad []string
	for _, s := range tds {
		td, err := spiffeid.TrustDomainFromString(s)
		if err != nil {
			bad = append(bad, s)
			continue
		}
		allowed[td] = true
	}
	return func(id identity.Identity, _ []*x509.Certificate) error {
		if len(bad) > 0 {
			return fmt.Errorf("%w: the trust domains %q are not valid: fix the configuration", ErrUnauthorized, bad)
		}
		if id.SPIFFE.IsZero() {
			return fmt.Errorf("%w: %s has no SPIFFE ID, and only trust domains are allowed", ErrUnauthorized, id)
		}
		if allowed[id.SPIFFE.TrustDomain()] {
			return nil
		}
		return fmt.Errorf("%w: trust domain %s is not allowed", ErrUnauthorized, id.SPIFFE.TrustDomain())
	}
}

// AuthorizeAny allows a peer that the first of as allows; it refuses with
// every refusal joined when none does, and refuses everything when as is
// empty.
func AuthorizeAny(as ...Authorizer) Authorizer {
	return func(id identity.Identity, chain []*x509.Certificate) error {
		if len(as) == 0 {
			return fmt.Errorf("%w: AuthorizeAny of nothing allows no one", ErrUnauthorized)
		}
		var errs []error
		for _, a := range as {
			err := a(id, chain)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// AuthorizeAll allows a peer that every one of as allows, and refuses
// everything when as is empty (no implicit allow-all).
func AuthorizeAll(as ...Authorizer) Authorizer {
	return func(id identity.Identity, chain []*x509.Certificate) error {
		if len(as) == 0 {
			return fmt.Errorf("%w: AuthorizeAll of nothing allows no one", ErrUnauthorized)
		}
		for _, a := range as {
			if err := a(id, chain); err != nil {
				return err
			}
		}
		return nil
	}
}

// AuthorizeFunc allows a peer for which allow returns true: a predicate
// for rules that names alone cannot say.
func AuthorizeFunc(allow func(id identity.Identity) bool) Authorizer {
	return func(id identity.Identity, _ []*x509.Certificate) error {
		if allow(id) {
			return nil
		}
		return fmt.Errorf("%w: %s refused by the predicate", ErrUnauthorized, id)
	}
}
