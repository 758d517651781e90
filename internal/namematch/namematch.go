// Package namematch reads the name patterns people write in rules that
// select certificates or events by name (discovery owner rules, webhook
// filters) and matches typed names against them. A pattern has a kind,
// and matches only names of that kind: a DNS pattern never matches an IP
// address or a SPIFFE ID, whatever their text.
//
//   - "web.example.org", "10.0.0.1", "spiffe://example.org/x": that name;
//   - "*.example.org": every DNS name below example.org, at any depth;
//   - "10.1.0.0/16", "fd00::/8": every address in the network;
//   - "spiffe://example.org/billing/": every SPIFFE ID that starts so.
//
// Start with [Parse] and [Pattern.Match].
package namematch

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/mica-pki/mica/identity"
)

// Pattern is one parsed pattern.
type Pattern struct {
	kind   identity.Kind
	exact  identity.Name
	suffix string       // DNS: ".example.org" for "*.example.org"
	prefix netip.Prefix // IP networks
	spiffe string       // SPIFFE ID prefix
}

// Parse reads one pattern.
func Parse(s string) (Pattern, error) {
	switch {
	case strings.HasPrefix(s, "spiffe://"):
		if strings.HasSuffix(s, "/") {
			if _, err := identity.ParseName(strings.TrimSuffix(s, "/")); err != nil {
				return Pattern{}, fmt.Errorf("namematch: %q is not a SPIFFE ID prefix: %w", s, err)
			}
			return Pattern{kind: identity.KindSPIFFE, spiffe: s}, nil
		}
	case strings.HasPrefix(s, "*."):
		n, err := identity.DNSName(s[2:])
		if err != nil {
			return Pattern{}, fmt.Errorf("namematch: %q: %w", s, err)
		}
		return Pattern{kind: identity.KindDNS, suffix: "." + n.String()}, nil
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Pattern{}, fmt.Errorf("namematch: %q is neither a network like 10.0.0.0/8 nor a name", s)
		}
		return Pattern{kind: identity.KindIP, prefix: p.Masked()}, nil
	}
	n, err := identity.ParseName(s)
	if err != nil {
		return Pattern{}, fmt.Errorf("namematch: %w", err)
	}
	return Pattern{kind: n.Kind(), exact: n}, nil
}

// ParseAll reads a list of patterns.
func ParseAll(list []string) ([]Pattern, error) {
	out := make([]Pattern, 0, len(list))
	for _, s := range list {
		p, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Match reports whether n is a name the pattern covers.
func (p Pattern) Match(n identity.Name) bool {
	if n.Kind() != p.kind {
		return false
	}
	switch {
	case p.suffix != "":
		return strings.HasSuffix(n.String(), p.suffix)
	case p.prefix.IsValid():
		a, _ := n.IP()
		return p.prefix.Contains(a)
	case p.spiffe != "":
		return strings.HasPrefix(n.String(), p.spiffe)
	}
	return p.exact == n
}

// Any reports whether one of the patterns covers one of the names.
func Any(patterns []Pattern, names []identity.Name) bool {
	for _, p := range patterns {
		for _, n := range names {
			if p.Match(n) {
				return true
			}
		}
	}
	return false
}
