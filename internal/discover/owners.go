package discover

import (
	"crypto/x509"
	"fmt"
	"path"
	"strings"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/namematch"
)

// OwnerRule says who answers for the discovered certificates it matches.
// Every field given must match; a field left out matches anything. The
// first rule that matches a sighting names its owner.
type OwnerRule struct {
	Owner string `yaml:"owner"`
	// Names match the certificate's names: a DNS name, "*.example.org"
	// for every name below example.org, an IP address or network
	// ("10.1.0.0/16"), or a SPIFFE ID prefix ("spiffe://example.org/billing/").
	Names []string `yaml:"names"`
	// Hosts match where the certificate was seen: the endpoint's host or
	// address, or the host a file is on, written like Names.
	Hosts []string `yaml:"hosts"`
	// Paths match files at or below these directories.
	Paths []string `yaml:"paths"`
	// Issuers match the issuer class (mica, external, self-signed) or,
	// otherwise, text in the issuer's distinguished name ("O=Example Corp").
	Issuers []string `yaml:"issuers"`
}

// Owners are compiled owner rules.
type Owners struct{ rules []ownerRule }

type ownerRule struct {
	owner   string
	names   []namematch.Pattern
	hosts   []namematch.Pattern
	paths   []string
	issuers []string
}

// CompileOwners checks the rules and compiles them.
func CompileOwners(rules []OwnerRule) (*Owners, error) {
	o := &Owners{}
	for i, r := range rules {
		if strings.TrimSpace(r.Owner) == "" {
			return nil, fmt.Errorf("discover: owner rule %d has no owner: name the team or person who answers for what it matches", i+1)
		}
		cr := ownerRule{owner: r.Owner, issuers: r.Issuers}
		var err error
		if cr.names, err = namematch.ParseAll(r.Names); err != nil {
			return nil, fmt.Errorf("discover: owner rule %d (%s): %w", i+1, r.Owner, err)
		}
		if cr.hosts, err = namematch.ParseAll(r.Hosts); err != nil {
			return nil, fmt.Errorf("discover: owner rule %d (%s): %w", i+1, r.Owner, err)
		}
		for _, p := range r.Paths {
			if !path.IsAbs(p) {
				return nil, fmt.Errorf("discover: owner rule %d (%s): path %q must be absolute", i+1, r.Owner, p)
			}
			cr.paths = append(cr.paths, path.Clean(p))
		}
		o.rules = append(o.rules, cr)
	}
	return o, nil
}

// Owner is the owner the first matching rule names, or "" when none does.
func (o *Owners) Owner(s Sighting, class Class) string {
	if o == nil || len(s.Chain) == 0 {
		return ""
	}
	leaf := s.Chain[0]
	for _, r := range o.rules {
		if len(r.names) > 0 && !namematch.Any(r.names, certNames(leaf)) {
			continue
		}
		if len(r.hosts) > 0 && !namematch.Any(r.hosts, sightingHost(s)) {
			continue
		}
		if len(r.paths) > 0 && !underAny(s.Location, r.paths) {
			continue
		}
		if len(r.issuers) > 0 && !issuerMatches(r.issuers, leaf, class) {
			continue
		}
		return r.owner
	}
	return ""
}

// certNames are every name of the certificate, typed: its SPIFFE ID (any
// URI SAN that is one), DNS names and IP addresses.
func certNames(c *x509.Certificate) []identity.Name {
	var out []identity.Name
	for _, u := range c.URIs {
		if n, err := identity.ParseName(u.String()); err == nil && n.Kind() == identity.KindSPIFFE {
			out = append(out, n)
		}
	}
	return append(out, hostNames(c)...)
}

func sightingHost(s Sighting) []identity.Name {
	out := append([]identity.Name{}, s.HostNames...)
	if n, err := identity.ParseName(s.Location.Host); err == nil && n.Kind() != identity.KindSPIFFE {
		out = append(out, n)
	}
	if s.Addr.IsValid() {
		out = append(out, identity.IPName(s.Addr))
	}
	return out
}

func underAny(l Location, dirs []string) bool {
	for _, d := range dirs {
		if l.Under(l.Host, d) {
			return true
		}
	}
	return false
}

func issuerMatches(issuers []string, leaf *x509.Certificate, class Class) bool {
	for _, i := range issuers {
		if Class(i) == class || strings.Contains(leaf.Issuer.String(), i) {
			return true
		}
	}
	return false
}
