package policy

import (
	"github.com/mica-pki/mica/identity"

	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// spiffeGlob matches SPIFFE ID paths. Wildcards are whole segments only, so
// a pattern can never match across a "/" by accident ("/billing*" would
// otherwise allow "/billing-admin").
type spiffeGlob struct {
	segs []string // "*" matches one segment; anything else is literal
	deep bool     // the pattern ended in "**": one or more further segments
}

// parseSPIFFEGlob parses a path glob such as "/ns/*/sa/*" or "/billing/**".
func parseSPIFFEGlob(p string) (spiffeGlob, error) {
	switch {
	case strings.HasPrefix(strings.ToLower(p), "spiffe:"):
		return spiffeGlob{}, errors.New("write only the path under the trust domain, like /billing/*")
	case p == "" || p == "/":
		return spiffeGlob{}, errors.New("name at least one path segment, like /billing/*")
	case p[0] != '/':
		return spiffeGlob{}, errors.New("start the path with /, like /" + p)
	case strings.HasSuffix(p, "/"):
		return spiffeGlob{}, errors.New("remove the trailing /: a SPIFFE ID path never ends in one (use /** to allow everything below)")
	}
	parts := strings.Split(p[1:], "/")
	var g spiffeGlob
	for i, s := range parts {
		switch {
		case s == "**":
			if i != len(parts)-1 {
				return spiffeGlob{}, errors.New("** may only be the last segment; use * for one segment in the middle")
			}
			g.deep = true
		case s == "*":
			g.segs = append(g.segs, s)
		case strings.Contains(s, "*"):
			return spiffeGlob{}, fmt.Errorf("segment %q mixes * with other characters: * must be a whole segment", s)
		default:
			if err := spiffeid.ValidatePathSegment(s); err != nil {
				return spiffeGlob{}, fmt.Errorf("segment %q is not a valid SPIFFE ID path segment (%v): use letters, digits, '.', '-' and '_'", s, err)
			}
			g.segs = append(g.segs, s)
		}
	}
	return g, nil
}

// match reports whether path (as from spiffeid.ID.Path, "/a/b") matches. It
// does not allocate: it runs on every request.
func (g *spiffeGlob) match(path string) bool {
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	rest := path[1:]
	for i, want := range g.segs {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" || (want != "*" && want != seg) {
			return false
		}
		if !more {
			return i == len(g.segs)-1 && !g.deep
		}
		rest = tail
	}
	// The path goes on past the pattern's fixed segments: only "**" takes
	// the rest, and only if it is well formed (no empty segments).
	return g.deep && rest != "" && !strings.HasPrefix(rest, "/") &&
		!strings.HasSuffix(rest, "/") && !strings.Contains(rest, "//")
}

// dnsPattern matches DNS names label by label.
type dnsPattern struct {
	labels []string // "*" matches exactly one label; others are literal
}

// parseDNSPattern parses a name such as "*.svc.example.internal". Patterns
// are case-insensitive, like DNS.
func parseDNSPattern(p string) (dnsPattern, error) {
	n := strings.ToLower(strings.TrimSuffix(p, "."))
	if n == "" || len(n) > 253 {
		return dnsPattern{}, errors.New("a DNS pattern must be 1 to 253 characters")
	}
	d := dnsPattern{labels: strings.Split(n, ".")}
	fixed := false
	for _, l := range d.labels {
		switch {
		case l == "*":
		case strings.Contains(l, "*"):
			return dnsPattern{}, fmt.Errorf("label %q mixes * with other characters: * must be a whole label (it matches exactly one)", l)
		case !identity.ValidLabel(l):
			return dnsPattern{}, fmt.Errorf("label %q must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen", l)
		default:
			fixed = true
		}
	}
	if !fixed {
		// "*" or "*.*" would allow names in any domain, which is never what
		// a profile means.
		return dnsPattern{}, errors.New("the pattern has no fixed label, so it would allow names in any domain: name the domain, like *.svc.example.internal")
	}
	return d, nil
}

// match reports whether a normalized (lower-case, no trailing dot) name
// matches. A request label "*" is matched only by a pattern "*", so with
// wildcards allowed "*.svc.example.internal" is covered by the same pattern
// and never by "api.svc.example.internal".
func (d *dnsPattern) match(name string) bool {
	rest := name
	for i, want := range d.labels {
		label, tail, more := strings.Cut(rest, ".")
		if label == "" || (want != "*" && want != label) {
			return false
		}
		if last := i == len(d.labels)-1; more == last {
			return false // the name has more, or fewer, labels than the pattern
		}
		rest = tail
	}
	return true
}

// parsePrefix reads a CIDR or a single address. A CIDR with host bits set
// ("10.0.0.1/8") is refused because it usually means a typo.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR: write it like 10.0.0.0/8 or fd00::/8", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: write it like 10.0.0.0/8 or fd00::/8", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 CIDR: write the IPv4 form, like 10.0.0.0/8", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length: did you mean %s?", s, m)
	}
	return p, nil
}

// containsAddr reports whether any prefix holds a.
func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
