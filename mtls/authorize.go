package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
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

// AuthorizeIDs allows exactly these identities: SPIFFE IDs
// ("spiffe://example.org/billing/api"), DNS names or IP addresses. A peer is
// allowed when any name in its certificate is in the list.
func AuthorizeIDs(ids ...string) Authorizer {
	allowed := make(map[string]bool, len(ids))
	for _, s := range ids {
		allowed[canonicalName(s)] = true
	}
	return func(id identity.Identity, _ []*x509.Certificate) error {
		if !id.SPIFFE.IsZero() && allowed[id.SPIFFE.String()] {
			return nil
		}
		for _, d := range id.DNS {
			if allowed[strings.ToLower(d)] {
				return nil
			}
		}
		for _, ip := range id.IPs {
			if allowed[ip.String()] {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is not one of the %d allowed identities", ErrUnauthorized, id, len(ids))
	}
}

// canonicalName writes a configured name the way identity.Parse reads it,
// so "Host.Example." matches a certificate's "host.example"; a name that
// does not parse is kept as it is (it then matches nothing).
func canonicalName(s string) string {
	id, err := identity.Parse(s)
	if err != nil || len(id.SANs()) != 1 {
		return s
	}
	return id.SANs()[0]
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
