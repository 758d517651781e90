package policy

import (
	"fmt"
	"strings"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
)

// Reserved names are enforced here, on the path every door shares, so that
// no ordinary profile can issue mica's own names: not an administrator's
// SPIFFE ID (which would otherwise be the first step to borrowing its
// role) and not the API's own server names (which mica's clients trust as
// the CA and send bearer tokens to).

// isReserved reports whether one name belongs to mica itself. Names are
// compared within their kind only.
func (r *Reserved) isReserved(n identity.Name) bool {
	if r == nil {
		return false
	}
	if id, ok := n.SPIFFE(); ok {
		return r.SPIFFEPath != "" && (id.Path() == r.SPIFFEPath || strings.HasPrefix(id.Path(), r.SPIFFEPath+"/"))
	}
	for _, rn := range r.Names {
		if rn == n {
			return true
		}
	}
	return false
}

// checkReserved refuses an identity that names anything reserved, unless
// the profile is one of mica's own.
func (p *profile) checkReserved(id identity.Identity) error {
	if p.mayReserve {
		return nil
	}
	for _, n := range id.Names() {
		if p.reserved.isReserved(n) {
			return p.deny(ReasonReservedName, "%s %s is reserved for mica itself and is issued only under mica's own profiles, not profile %q: choose another name",
				n.Kind(), n, p.info.Name)
		}
	}
	return nil
}

// checkReservedPatterns refuses, at load, a pattern of an ordinary profile
// that names reserved names outright (a SPIFFE glob under /mica, a DNS
// name or address that is one of the server's), and records DNS and IP
// patterns that would cover one of the server's names in
// ProfileInfo.CoversReserved, so that `mica policy check` and start-up can
// say they are excluded.
func (p *profile) checkReservedPatterns() []error {
	r := p.reserved
	if r == nil || r.ProfilePrefix == "" {
		return nil
	}
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: profile %q: %s: %s", p.info.Name, field, fmt.Sprintf(format, args...)))
	}
	// A SPIFFE glob that names the reserved namespace outright is an
	// error. Wildcards ("/**", "/*/admin/*") never reach into it: the
	// namespace is outside every ordinary profile by definition, so there
	// is nothing to report for them.
	reservedSeg := strings.TrimPrefix(r.SPIFFEPath, "/")
	for i, g := range p.spiffe {
		if reservedSeg != "" && len(g.segs) > 0 && g.segs[0] == reservedSeg {
			fail("spiffe", "%q names mica's reserved namespace %s/**, which only mica's own profiles issue: remove it", p.info.SPIFFE[i], r.SPIFFEPath)
		}
	}
	for _, n := range r.Names {
		switch n.Kind() {
		case identity.KindDNS:
			for i, d := range p.dns {
				if !d.match(n.String()) {
					continue
				}
				if strings.Join(d.labels, ".") == n.String() {
					fail("dns", "%q is one of the server's own names (server_names), which only mica's own profiles issue: remove it", p.info.DNS[i])
				} else {
					p.info.CoversReserved = append(p.info.CoversReserved, fmt.Sprintf("dns %s covers the server name %s", p.info.DNS[i], n))
				}
			}
		case identity.KindIP:
			a, _ := n.IP()
			for i, pr := range p.ips {
				if !pr.Contains(a) {
					continue
				}
				if pr.IsSingleIP() {
					fail("ips", "%q is one of the server's own addresses (server_names), which only mica's own profiles issue: remove it", p.info.IPs[i])
				} else {
					p.info.CoversReserved = append(p.info.CoversReserved, fmt.Sprintf("ips %s covers the server address %s", p.info.IPs[i], n))
				}
			}
		}
	}
	return errs
}

// checkRenewalChain refuses a renewal whose chain began longer ago than
// the profile's max_renewal_chain.
func (p *profile) checkRenewalChain(req Request) error {
	max := p.info.MaxRenewalChain
	if max <= 0 || req.Method != MethodRenew || req.ChainAge <= max {
		return nil
	}
	return p.deny(ReasonRenewalChainEnded,
		"this certificate's renewal chain began %s ago and profile %q allows renewals for %s from the first enrollment: enroll again with a new token from `mica token create`",
		duration.Format(req.ChainAge.Round(1e9)), p.info.Name, duration.Format(max))
}
