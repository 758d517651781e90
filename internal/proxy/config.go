package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/duration"
)

// Mode is what a listener does.
type Mode string

const (
	// Inbound terminates mTLS and forwards plain HTTP to a backend.
	Inbound Mode = "inbound"
	// Outbound takes plain HTTP on loopback and forwards over mTLS.
	Outbound Mode = "outbound"
)

// ListenerConfig is one listener of the proxy, as the config file says it.
// Zero values are safe: they mean the documented default.
type ListenerConfig struct {
	// Name labels the listener in metrics and logs; required, unique.
	Name string `yaml:"name"`
	Mode Mode   `yaml:"mode"`
	// Listen is host:port. Inbound listeners may listen anywhere;
	// outbound ones only on loopback, because whoever reaches them speaks
	// with the proxy's identity.
	Listen string `yaml:"listen"`

	// Backend (inbound) is the plain-HTTP service behind the proxy,
	// http://host:port[/base path].
	Backend string `yaml:"backend"`
	// Allow (inbound) says which identities may use the listener when no
	// route matches the request path.
	Allow *Rule `yaml:"allow"`
	// Routes (inbound) give path prefixes of the request URL their own
	// rule; the longest matching prefix decides instead of Allow.
	Routes []Route `yaml:"routes"`
	// SetHeaders (inbound) are sent to the backend on every request, after
	// any header of the same name from the client is removed.
	SetHeaders map[string]string `yaml:"set_headers"`
	// StripHeaders (inbound) are more header names the backend trusts and
	// so must never come from the client; the X-Mica-* headers and
	// X-Forwarded-Client-Cert are always stripped.
	StripHeaders []string `yaml:"strip_headers"`

	// Upstream (outbound) is the mTLS service, https://host:port[/base path].
	Upstream string `yaml:"upstream"`
	// Expect (outbound) is the identity the upstream must prove; required.
	Expect *Rule `yaml:"expect"`

	// MaxBodyBytes bounds a request body; default 10 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Timeout bounds the wait for the response headers from the backend or
	// upstream; default 60s. Streaming bodies are not cut.
	Timeout duration.Duration `yaml:"timeout"`
}

// Rule lists the identities allowed; a peer is allowed when any entry
// matches any of its names.
type Rule struct {
	// IDs are exact SPIFFE IDs, DNS names or IP addresses. Each keeps the
	// kind its text says (identity.ParseName) and is compared only with
	// the peer's names of that kind: "127.0.0.1" matches an IP SAN, never
	// a DNS SAN that reads the same.
	IDs []string `yaml:"ids"`
	// IDPrefixes are SPIFFE ID path prefixes: spiffe://example.org/billing/
	// allows spiffe://example.org/billing and everything below it.
	IDPrefixes []string `yaml:"id_prefixes"`
	// TrustDomains allow every SPIFFE ID of these trust domains.
	TrustDomains []string `yaml:"trust_domains"`
}

// Route gives requests whose path starts with Path their own rule.
type Route struct {
	// Path is a prefix of the request path. "/admin/" matches /admin/ and
	// below; "/admin" matches /admin and /admin/… but not /administrator.
	Path  string `yaml:"path"`
	Allow *Rule  `yaml:"allow"`
}

// Defaults.
const (
	DefaultMaxBodyBytes = 10 << 20
	DefaultTimeout      = 60 * time.Second
)

// withDefaults fills the zero values.
func (c ListenerConfig) withDefaults() ListenerConfig {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Timeout == 0 {
		c.Timeout = duration.Duration(DefaultTimeout)
	}
	return c
}

// Validate checks a set of listeners the way Apply will use them, so a bad
// config is refused whole, before anything changes.
func Validate(ls []ListenerConfig) error {
	if len(ls) == 0 {
		return fmt.Errorf("proxy: no listeners: add at least one under listeners (mode inbound or outbound)")
	}
	names, addrs := map[string]bool{}, map[string]string{}
	for i, l := range ls {
		where := fmt.Sprintf("proxy: listener %d", i+1)
		if l.Name != "" {
			where = fmt.Sprintf("proxy: listener %q", l.Name)
		}
		if err := l.validate(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if names[l.Name] {
			return fmt.Errorf("%s: the name is used twice; give each listener its own", where)
		}
		names[l.Name] = true
		if other, ok := addrs[serverKey(l)]; ok {
			return fmt.Errorf("%s: listen %s is also listener %q's; give each its own address", where, l.Listen, other)
		}
		addrs[serverKey(l)] = l.Name
	}
	return nil
}

// serverKey is what a running listener is known by across reloads: its
// address as configured, so that a listener that keeps its address keeps its
// socket even when renamed; port 0 (any free port) is told apart by name.
func serverKey(c ListenerConfig) string {
	if _, port, _ := net.SplitHostPort(c.Listen); port == "0" {
		return c.Name + "@" + c.Listen
	}
	return c.Listen
}

func (c ListenerConfig) validate() error {
	if c.Name == "" {
		return fmt.Errorf("name is required (it labels the metrics)")
	}
	if strings.ContainsAny(c.Name, " \t\n\"") {
		return fmt.Errorf("name %q: use letters, digits, dashes", c.Name)
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen %q is not host:port (e.g. 0.0.0.0:8444): %v", c.Listen, err)
	}
	if c.MaxBodyBytes < 0 || c.Timeout < 0 {
		return fmt.Errorf("max_body_bytes and timeout must be positive (or absent for the defaults)")
	}
	switch c.Mode {
	case Inbound:
		if c.Upstream != "" || c.Expect != nil {
			return fmt.Errorf("upstream and expect are for outbound listeners; an inbound one has backend and allow")
		}
		if err := checkURL(c.Backend, "http", "backend"); err != nil {
			return err
		}
		if c.Allow == nil && len(c.Routes) == 0 {
			return fmt.Errorf("allow (or routes) is required: say which identities may connect, e.g. allow: {trust_domains: [example.org]}")
		}
		if c.Allow != nil {
			if err := c.Allow.validate(); err != nil {
				return fmt.Errorf("allow: %w", err)
			}
		}
		paths := map[string]bool{}
		for _, r := range c.Routes {
			if !strings.HasPrefix(r.Path, "/") {
				return fmt.Errorf("route path %q must start with /", r.Path)
			}
			if paths[r.Path] {
				return fmt.Errorf("route path %q appears twice", r.Path)
			}
			paths[r.Path] = true
			if r.Allow == nil {
				return fmt.Errorf("route %s: allow is required", r.Path)
			}
			if err := r.Allow.validate(); err != nil {
				return fmt.Errorf("route %s: allow: %w", r.Path, err)
			}
		}
		for k, v := range c.SetHeaders {
			if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Errorf("set_headers: %q is not a valid header", k)
			}
			if isIdentityHeader(normalizeHeaderName(k)) {
				return fmt.Errorf("set_headers: %s is the proxy's own identity header and cannot be set", k)
			}
		}
		for _, k := range c.StripHeaders {
			if !validHeaderName(k) {
				return fmt.Errorf("strip_headers: %q is not a valid header name", k)
			}
		}
	case Outbound:
		if c.Backend != "" || c.Allow != nil || len(c.Routes) > 0 || len(c.SetHeaders) > 0 || len(c.StripHeaders) > 0 {
			return fmt.Errorf("backend, allow, routes, set_headers and strip_headers are for inbound listeners; an outbound one has upstream and expect")
		}
		if host != "localhost" && !isLoopback(host) {
			return fmt.Errorf("listen %s: an outbound listener must be on loopback (127.0.0.1, ::1 or localhost): whoever reaches it speaks with the proxy's identity", c.Listen)
		}
		if err := checkURL(c.Upstream, "https", "upstream"); err != nil {
			return err
		}
		if c.Expect == nil {
			return fmt.Errorf("expect is required: the identity the upstream must prove, e.g. expect: {ids: [spiffe://example.org/ledger/api]}")
		}
		if err := c.Expect.validate(); err != nil {
			return fmt.Errorf("expect: %w", err)
		}
	default:
		return fmt.Errorf("mode %q: use inbound or outbound", c.Mode)
	}
	return nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkURL(raw, scheme, field string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != scheme || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%s %q must be a URL like %s://host:port (no query, no credentials)", field, raw, scheme)
	}
	return nil
}

func (r *Rule) validate() error {
	if len(r.IDs)+len(r.IDPrefixes)+len(r.TrustDomains) == 0 {
		return fmt.Errorf("names no identity: list ids, id_prefixes or trust_domains")
	}
	for _, s := range r.IDs {
		if _, err := identity.ParseName(s); err != nil {
			return fmt.Errorf("ids: %q is not one SPIFFE ID, DNS name or IP address: %w", s, err)
		}
	}
	for _, s := range r.IDPrefixes {
		if _, err := spiffeid.FromString(strings.TrimSuffix(s, "/")); err != nil {
			return fmt.Errorf("id_prefixes: %q is not a SPIFFE ID prefix like spiffe://example.org/billing/: %v", s, err)
		}
	}
	for _, s := range r.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(s); err != nil {
			return fmt.Errorf("trust_domains: %q is not a trust domain like example.org: %v", s, err)
		}
	}
	return nil
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return http.CanonicalHeaderKey(s) != ""
}
