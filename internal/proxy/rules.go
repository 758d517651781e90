package proxy

import (
	"path"
	"slices"
	"strings"

	"github.com/mica-pki/mica/mtls"
)

// authorizer turns a rule into the mtls Authorizer that enforces it.
func (r *Rule) authorizer() mtls.Authorizer {
	var as []mtls.Authorizer
	if len(r.IDs) > 0 {
		// Validate has parsed every ID; AuthorizeIDs parses them once
		// more, into typed names, when the rule is compiled.
		as = append(as, mtls.AuthorizeIDs(r.IDs...))
	}
	if len(r.IDPrefixes) > 0 {
		as = append(as, mtls.AuthorizePathPrefixes(r.IDPrefixes...))
	}
	if len(r.TrustDomains) > 0 {
		as = append(as, mtls.AuthorizeTrustDomains(r.TrustDomains...))
	}
	return mtls.AuthorizeAny(as...)
}

// rules is an inbound listener's authorization: the routes, longest path
// first, then the listener's own rule.
type rules struct {
	routes   []compiledRoute
	fallback mtls.Authorizer // nil: a request no route matches is refused
}

type compiledRoute struct {
	prefix    string
	authorize mtls.Authorizer
}

func compileRules(c ListenerConfig) rules {
	var rs rules
	if c.Allow != nil {
		rs.fallback = c.Allow.authorizer()
	}
	for _, r := range c.Routes {
		rs.routes = append(rs.routes, compiledRoute{prefix: r.Path, authorize: r.Allow.authorizer()})
	}
	slices.SortFunc(rs.routes, func(a, b compiledRoute) int { return len(b.prefix) - len(a.prefix) })
	return rs
}

// forPath returns the rule that decides a request for p, and the route's
// prefix ("" for the listener's rule). A nil Authorizer refuses.
func (rs rules) forPath(p string) (mtls.Authorizer, string) {
	for _, r := range rs.routes {
		if pathHasPrefix(p, r.prefix) {
			return r.authorize, r.prefix
		}
	}
	return rs.fallback, ""
}

// pathHasPrefix matches on segment boundaries: "/admin" matches /admin and
// /admin/x but not /administrator; "/admin/" matches /admin/ and below.
func pathHasPrefix(p, prefix string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || strings.HasSuffix(prefix, "/") || p[len(prefix)] == '/'
}

// canonicalPath reports whether a request path means one thing to every
// backend, so that a path rule cannot be dodged: no dot segments, no empty
// segments, no backslashes, and no encoded slash or backslash. When routes
// decide by path, other paths are refused rather than guessed at.
func canonicalPath(decoded, escaped string) bool {
	if decoded == "" || decoded[0] != '/' || strings.Contains(decoded, `\`) {
		return false
	}
	lower := strings.ToLower(escaped)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") {
		return false
	}
	clean := path.Clean(decoded)
	if strings.HasSuffix(decoded, "/") && clean != "/" {
		clean += "/"
	}
	return clean == decoded
}
