package policy

import (
	"github.com/mica-pki/mica/internal/duration"

	"crypto"
	"crypto/x509"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
)

func mustKey(t testing.TB, kind string) crypto.PublicKey {
	t.Helper()
	k, err := SamplePublicKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func exampleEngine(t testing.TB) *Engine {
	t.Helper()
	data, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return mustEngine(t, cfg)
}

func sid(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// testConfig has one profile per concern, so each case exercises one check.
func testConfig() Config {
	return Config{
		TrustDomain: "example.org",
		Profiles: map[string]ProfileConfig{
			"service": {
				SPIFFE:     []string{"/billing/*", "/ns/*/sa/*"},
				DNS:        []string{"*.svc.example.internal", "api.example.org"},
				IPs:        []string{"10.0.0.0/8", "fd00::/8"},
				DefaultTTL: duration.Duration(time.Hour),
				KeyTypes:   []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"},
			},
			"deep":      {SPIFFE: []string{"/batch/**"}, MaxTTL: duration.Duration(2 * time.Hour)},
			"wild":      {DNS: []string{"*.edge.example.org"}, AllowWildcards: true, ExtKeyUsage: []string{"serverAuth"}},
			"strongrsa": {DNS: []string{"rsa.example.org"}, KeyTypes: []string{"rsa"}, MinRSABits: 3072},
			"netted":    {DNS: []string{"n.example.org"}, Networks: []string{"10.0.0.0/8", "fd00::/8"}},
			"watched":   {DNS: []string{"w.example.org"}, ExpectedNetworks: []string{"10.1.0.0/16", "fd00:1::/32"}},
			"ruled": {
				SPIFFE: []string{"/**"},
				Rule:   `request.method == "renew" || request.spiffe_id.startsWith("spiffe://example.org/billing/")`,
			},
			"looping": {
				DNS:  []string{"*.example.org"},
				Rule: `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`,
			},
			"erroring": {DNS: []string{"*.example.org"}, Rule: `request.dns[3] == "x.example.org"`},
		},
	}
}

func TestDecideAllow(t *testing.T) {
	e := mustEngine(t, testConfig())
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	tests := []struct {
		name string
		req  Request
		want Decision
	}{
		{
			name: "spiffe one segment glob, default ttl",
			req:  Request{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/api")}, PublicKey: mustKey(t, "ecdsa-p256")},
			want: Decision{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/api")}, TTL: time.Hour, ExtKeyUsage: both},
		},
		{
			name: "spiffe glob with two wildcards",
			req:  Request{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/ns/prod/sa/web")}, TTL: 24 * time.Hour, PublicKey: mustKey(t, "ed25519")},
			want: Decision{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/ns/prod/sa/web")}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "spiffe plus dns plus ips, names normalized",
			req: Request{Profile: "service", PublicKey: mustKey(t, "ecdsa-p384"), Identity: identity.Identity{
				SPIFFE: sid("spiffe://example.org/billing/api"),
				DNS:    []string{"API.Example.org.", "db.svc.example.internal"},
				IPs:    addrs("::ffff:10.1.2.3", "fd00::1"),
			}},
			want: Decision{Profile: "service", TTL: time.Hour, ExtKeyUsage: both, Identity: identity.Identity{
				SPIFFE: sid("spiffe://example.org/billing/api"),
				DNS:    []string{"api.example.org", "db.svc.example.internal"},
				IPs:    addrs("10.1.2.3", "fd00::1"),
			}},
		},
		{
			name: "ip only identity",
			req:  Request{Profile: "service", Identity: identity.Identity{IPs: addrs("10.255.255.255")}, PublicKey: mustKey(t, "rsa-2048")},
			want: Decision{Profile: "service", Identity: identity.Identity{IPs: addrs("10.255.255.255")}, TTL: time.Hour, ExtKeyUsage: both},
		},
		{
			name: "rsa at exactly the floor",
			req:  Request{Profile: "service", Identity: identity.Identity{DNS: []string{"api.example.org"}}, PublicKey: mustKey(t, "rsa-2048")},
			want: Decision{Profile: "service", Identity: identity.Identity{DNS: []string{"api.example.org"}}, TTL: time.Hour, ExtKeyUsage: both},
		},
		{
			name: "rsa at a raised floor",
			req:  Request{Profile: "strongrsa", Identity: identity.Identity{DNS: []string{"rsa.example.org"}}, PublicKey: mustKey(t, "rsa-3072")},
			want: Decision{Profile: "strongrsa", Identity: identity.Identity{DNS: []string{"rsa.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "deep glob, no default ttl falls back to max_ttl",
			req:  Request{Profile: "deep", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/batch/a/b/c")}, PublicKey: mustKey(t, "ecdsa-p256")},
			want: Decision{Profile: "deep", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/batch/a/b/c")}, TTL: 2 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "ttl exactly max",
			req:  Request{Profile: "deep", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/batch/x")}, TTL: 2 * time.Hour, PublicKey: mustKey(t, "ecdsa-p256")},
			want: Decision{Profile: "deep", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/batch/x")}, TTL: 2 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "wildcard when allowed, server auth only",
			req:  Request{Profile: "wild", Identity: identity.Identity{DNS: []string{"*.edge.example.org", "a.edge.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256")},
			want: Decision{Profile: "wild", Identity: identity.Identity{DNS: []string{"*.edge.example.org", "a.edge.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		},
		{
			name: "source inside networks (v4)",
			req:  Request{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256"), Source: netip.MustParseAddr("10.0.0.1")},
			want: Decision{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "source inside networks (v4-mapped v6)",
			req:  Request{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256"), Source: netip.MustParseAddr("::ffff:10.0.0.1")},
			want: Decision{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "source inside expected networks",
			req:  Request{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256"), Source: netip.MustParseAddr("::ffff:10.1.2.3")},
			want: Decision{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "source outside expected networks is allowed and flagged",
			req:  Request{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256"), Source: netip.MustParseAddr("10.2.0.1")},
			want: Decision{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both, UnexpectedSource: true},
		},
		{
			name: "unknown source with expected networks is flagged",
			req:  Request{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256")},
			want: Decision{Profile: "watched", Identity: identity.Identity{DNS: []string{"w.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both, UnexpectedSource: true},
		},
		{
			name: "no expected networks, nothing flagged",
			req:  Request{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, PublicKey: mustKey(t, "ecdsa-p256"), Source: netip.MustParseAddr("10.9.9.9")},
			want: Decision{Profile: "netted", Identity: identity.Identity{DNS: []string{"n.example.org"}}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "rule true by method",
			req:  Request{Profile: "ruled", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/other")}, PublicKey: mustKey(t, "ecdsa-p256"), Method: MethodRenew},
			want: Decision{Profile: "ruled", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/other")}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
		{
			name: "rule true by spiffe id",
			req:  Request{Profile: "ruled", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/x")}, PublicKey: mustKey(t, "ecdsa-p256"), Method: MethodToken},
			want: Decision{Profile: "ruled", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/x")}, TTL: 24 * time.Hour, ExtKeyUsage: both},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Decide(tt.req)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if got.Profile != tt.want.Profile || got.TTL != tt.want.TTL || !got.Identity.Equal(tt.want.Identity) || !equalEKU(got.ExtKeyUsage, tt.want.ExtKeyUsage) {
				t.Errorf("Decide =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func equalEKU(a, b []x509.ExtKeyUsage) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecideDeny(t *testing.T) {
	e := mustEngine(t, testConfig())
	p256 := mustKey(t, "ecdsa-p256")
	dns := func(names ...string) identity.Identity { return identity.Identity{DNS: names} }
	spf := func(s string) identity.Identity { return identity.Identity{SPIFFE: sid(s)} }
	tests := []struct {
		name       string
		req        Request
		reason     Reason
		wantDetail string // a substring of the detail
	}{
		{"unknown profile", Request{Profile: "nope", Identity: dns("api.example.org"), PublicKey: p256},
			ReasonUnknownProfile, `profile "nope" does not exist (profiles: deep, erroring, looping, netted, ruled, service, strongrsa, watched, wild)`},
		{"no profile", Request{Identity: dns("api.example.org"), PublicKey: p256},
			ReasonUnknownProfile, "names no profile"},
		{"empty identity", Request{Profile: "service", PublicKey: p256},
			ReasonInvalidIdentity, "names no identity"},
		{"invalid dns syntax", Request{Profile: "service", Identity: dns("bad_name.example.org"), PublicKey: p256},
			ReasonInvalidIdentity, `"bad_name.example.org" is not a valid DNS name`},
		{"wildcard in the middle is invalid", Request{Profile: "wild", Identity: dns("a.*.example.org"), PublicKey: p256},
			ReasonInvalidIdentity, "not a valid DNS name"},
		{"duplicate dns", Request{Profile: "service", Identity: dns("api.example.org", "API.example.org"), PublicKey: p256},
			ReasonInvalidIdentity, "listed twice"},
		{"invalid ip", Request{Profile: "service", Identity: identity.Identity{IPs: []netip.Addr{{}}}, PublicKey: p256},
			ReasonInvalidIdentity, "empty"},
		{"ip with zone", Request{Profile: "service", Identity: identity.Identity{IPs: addrs("fd00::1%eth0")}, PublicKey: p256},
			ReasonInvalidIdentity, "zone"},
		{"spiffe id not matching any glob", Request{Profile: "service", Identity: spf("spiffe://example.org/other"), PublicKey: p256},
			ReasonIdentityNotAllowed, `identity spiffe://example.org/other is not allowed by profile "service" (allowed: spiffe://example.org/billing/*, spiffe://example.org/ns/*/sa/*)`},
		{"spiffe id outside trust domain", Request{Profile: "service", Identity: spf("spiffe://evil.org/billing/api"), PublicKey: p256},
			ReasonIdentityNotAllowed, "identity spiffe://evil.org/billing/api is not allowed"},
		{"spiffe * does not match two segments", Request{Profile: "service", Identity: spf("spiffe://example.org/billing/api/admin"), PublicKey: p256},
			ReasonIdentityNotAllowed, "not allowed"},
		{"spiffe ** needs at least one segment", Request{Profile: "deep", Identity: spf("spiffe://example.org/batch"), PublicKey: p256},
			ReasonIdentityNotAllowed, "allowed: spiffe://example.org/batch/**"},
		{"spiffe trust domain id itself", Request{Profile: "ruled", Identity: spf("spiffe://example.org"), PublicKey: p256, Method: MethodRenew},
			ReasonIdentityNotAllowed, "not allowed"},
		{"spiffe id where profile has none", Request{Profile: "wild", Identity: spf("spiffe://example.org/x"), PublicKey: p256},
			ReasonIdentityNotAllowed, "(allowed: no SPIFFE IDs)"},
		{"dns not matching", Request{Profile: "service", Identity: dns("www.example.org"), PublicKey: p256},
			ReasonIdentityNotAllowed, `DNS name www.example.org is not allowed by profile "service" (allowed: *.svc.example.internal, api.example.org)`},
		{"dns * is one label only", Request{Profile: "service", Identity: dns("a.b.svc.example.internal"), PublicKey: p256},
			ReasonIdentityNotAllowed, "a.b.svc.example.internal is not allowed"},
		{"dns pattern does not match its parent", Request{Profile: "service", Identity: dns("svc.example.internal"), PublicKey: p256},
			ReasonIdentityNotAllowed, "not allowed"},
		{"one bad name spoils the lot", Request{Profile: "service", Identity: dns("api.example.org", "evil.com"), PublicKey: p256},
			ReasonIdentityNotAllowed, "evil.com"},
		{"wildcard not allowed, checked before patterns", Request{Profile: "service", Identity: dns("*.svc.example.internal"), PublicKey: p256},
			ReasonWildcard, `wildcard DNS name *.svc.example.internal is not allowed by profile "service"`},
		{"wildcard not allowed even if it would not match", Request{Profile: "service", Identity: dns("*.evil.com"), PublicKey: p256},
			ReasonWildcard, "allow_wildcards"},
		{"wildcard allowed but broader than pattern", Request{Profile: "wild", Identity: dns("*.example.org"), PublicKey: p256},
			ReasonIdentityNotAllowed, "*.example.org is not allowed"},
		{"ip outside cidrs", Request{Profile: "service", Identity: identity.Identity{IPs: addrs("192.168.1.1")}, PublicKey: p256},
			ReasonIdentityNotAllowed, `IP address 192.168.1.1 is not allowed by profile "service" (allowed: 10.0.0.0/8, fd00::/8)`},
		{"ip where profile has none", Request{Profile: "wild", Identity: identity.Identity{IPs: addrs("10.0.0.1")}, PublicKey: p256},
			ReasonIdentityNotAllowed, "(allowed: no IP addresses)"},
		{"ttl over max", Request{Profile: "service", Identity: dns("api.example.org"), TTL: 25 * time.Hour, PublicKey: p256},
			ReasonTTLTooLong, `ttl 25h is longer than profile "service" allows (max_ttl: 24h): ask for 24h or less`},
		{"ttl one nanosecond over", Request{Profile: "deep", Identity: spf("spiffe://example.org/batch/x"), TTL: 2*time.Hour + 1, PublicKey: p256},
			ReasonTTLTooLong, "max_ttl: 2h"},
		{"negative ttl", Request{Profile: "service", Identity: dns("api.example.org"), TTL: -time.Second, PublicKey: p256},
			ReasonInvalidRequest, "negative"},
		{"rsa-1024", Request{Profile: "service", Identity: dns("api.example.org"), PublicKey: mustKey(t, "rsa-1024")},
			ReasonKeyNotAllowed, `key rsa-1024 is not allowed by profile "service" (allowed: ecdsa-p256, ecdsa-p384, ed25519, rsa of 2048 bits or more)`},
		{"rsa-2047", Request{Profile: "service", Identity: dns("api.example.org"), PublicKey: mustKey(t, "rsa-2047")},
			ReasonKeyNotAllowed, "rsa-2047"},
		{"rsa below raised floor", Request{Profile: "strongrsa", Identity: dns("rsa.example.org"), PublicKey: mustKey(t, "rsa-2048")},
			ReasonKeyNotAllowed, "rsa of 3072 bits or more"},
		{"rsa not in defaults", Request{Profile: "wild", Identity: dns("a.edge.example.org"), PublicKey: mustKey(t, "rsa-4096")},
			ReasonKeyNotAllowed, "(allowed: ecdsa-p256, ecdsa-p384, ed25519)"},
		{"p521 not in defaults", Request{Profile: "wild", Identity: dns("a.edge.example.org"), PublicKey: mustKey(t, "ecdsa-p521")},
			ReasonKeyNotAllowed, "key ecdsa-p521 is not allowed"},
		{"no key", Request{Profile: "wild", Identity: dns("a.edge.example.org")},
			ReasonKeyNotAllowed, "no public key"},
		{"unsupported key type", Request{Profile: "wild", Identity: dns("a.edge.example.org"), PublicKey: "not a key"},
			ReasonKeyNotAllowed, "not supported"},
		{"source outside networks", Request{Profile: "netted", Identity: dns("n.example.org"), PublicKey: p256, Source: netip.MustParseAddr("192.0.2.1")},
			ReasonSourceNotAllowed, `source address 192.0.2.1 is not allowed by profile "netted" (allowed networks: 10.0.0.0/8, fd00::/8)`},
		{"source unknown with networks set", Request{Profile: "netted", Identity: dns("n.example.org"), PublicKey: p256},
			ReasonSourceNotAllowed, "unknown"},
		{"rule false", Request{Profile: "ruled", Identity: spf("spiffe://example.org/other"), PublicKey: p256, Method: MethodToken},
			ReasonRuleDenied, `the rule of profile "ruled" refused the request (rule: request.method == "renew"`},
		{"rule over its cost limit", Request{Profile: "looping", Identity: dns("a.example.org"), PublicKey: p256},
			ReasonRuleDenied, "cost limit"},
		{"rule erroring", Request{Profile: "erroring", Identity: dns("a.example.org"), PublicKey: p256},
			ReasonRuleDenied, "could not be evaluated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Decide(tt.req)
			var denied *DeniedError
			if !errors.As(err, &denied) {
				t.Fatalf("Decide = %+v, %v; want *DeniedError", got, err)
			}
			if denied.Reason != tt.reason {
				t.Errorf("Reason = %s, want %s (%v)", denied.Reason, tt.reason, err)
			}
			if denied.Profile != tt.req.Profile {
				t.Errorf("Profile = %q, want %q", denied.Profile, tt.req.Profile)
			}
			if !strings.Contains(denied.Detail, tt.wantDetail) {
				t.Errorf("Detail = %q\nwant it to contain %q", denied.Detail, tt.wantDetail)
			}
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("Error() = %q, want a policy: prefix", err)
			}
			if !got.Identity.IsZero() || got.TTL != 0 {
				t.Errorf("a denial returned a non-zero decision: %+v", got)
			}
		})
	}
}

func TestDecideDoesNotAliasRequest(t *testing.T) {
	e := mustEngine(t, testConfig())
	names := []string{"api.example.org"}
	dec, err := e.Decide(Request{Profile: "service", Identity: identity.Identity{DNS: names}, PublicKey: mustKey(t, "ecdsa-p256")})
	if err != nil {
		t.Fatal(err)
	}
	dec.Identity.DNS[0] = "changed"
	dec.ExtKeyUsage[0] = x509.ExtKeyUsageAny
	if names[0] != "api.example.org" {
		t.Error("the decision shares the request's DNS slice")
	}
	dec2, _ := e.Decide(Request{Profile: "service", Identity: identity.Identity{DNS: names}, PublicKey: mustKey(t, "ecdsa-p256")})
	if dec2.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Error("the decision shares the engine's key usages")
	}
}

func TestCheckIdentity(t *testing.T) {
	e := mustEngine(t, testConfig())
	if err := e.CheckIdentity("service", identity.Identity{SPIFFE: sid("spiffe://example.org/billing/a")}); err != nil {
		t.Errorf("allowed identity: %v", err)
	}
	var denied *DeniedError
	if err := e.CheckIdentity("service", identity.Identity{SPIFFE: sid("spiffe://example.org/x")}); !errors.As(err, &denied) || denied.Reason != ReasonIdentityNotAllowed {
		t.Errorf("disallowed identity: %v", err)
	}
	if err := e.CheckIdentity("nope", identity.Identity{DNS: []string{"a"}}); !errors.As(err, &denied) || denied.Reason != ReasonUnknownProfile {
		t.Errorf("unknown profile: %v", err)
	}
}

func TestProfiles(t *testing.T) {
	e := exampleEngine(t)
	if got := strings.Join(e.Profiles(), ","); got != "batch,edge,service" {
		t.Errorf("Profiles() = %s", got)
	}
	info, ok := e.Profile("service")
	if !ok {
		t.Fatal("Profile(service) not found")
	}
	if got := strings.Join(info.SPIFFE, ","); got != "spiffe://example.org/billing/*,spiffe://example.org/ns/*/sa/*" {
		t.Errorf("SPIFFE = %s", got)
	}
	if info.DefaultTTL != time.Hour || info.MaxTTL != 24*time.Hour || info.MinRSABits != 2048 {
		t.Errorf("ttl/rsa = %v %v %d", info.DefaultTTL, info.MaxTTL, info.MinRSABits)
	}
	edge, _ := e.Profile("edge")
	if edge.DefaultTTL != 72*time.Hour || strings.Join(edge.KeyTypes, ",") != "ecdsa-p256,ecdsa-p384,ed25519" ||
		strings.Join(edge.ExtKeyUsage, ",") != "serverAuth" || edge.MinRSABits != 0 || !edge.AllowWildcards {
		t.Errorf("edge defaults = %+v", edge)
	}
	info.SPIFFE[0] = "mutated"
	again, _ := e.Profile("service")
	if again.SPIFFE[0] == "mutated" {
		t.Error("Profile returns the engine's own slices")
	}
	if _, ok := e.Profile("nope"); ok {
		t.Error("Profile(nope) found")
	}
}

func TestDecideConcurrent(t *testing.T) {
	e := exampleEngine(t)
	req := Request{Profile: "service", Identity: identity.Identity{SPIFFE: sid("spiffe://example.org/billing/api")},
		PublicKey: mustKey(t, "ecdsa-p256"), Method: MethodToken, Source: netip.MustParseAddr("10.0.0.1")}
	done := make(chan error)
	for range 8 {
		go func() {
			var err error
			for range 200 {
				if _, err = e.Decide(req); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
