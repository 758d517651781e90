package mtls_test

import (
	"errors"
	"testing"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/mtls"
)

func name(t *testing.T, s string) identity.Name {
	t.Helper()
	n, err := identity.ParseName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAuthorizers(t *testing.T) {
	id := func(s string) identity.Identity {
		t.Helper()
		v, err := identity.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	web := id("spiffe://example.org/ns/prod/sa/web")
	tests := []struct {
		name  string
		a     mtls.Authorizer
		id    identity.Identity
		allow bool
	}{
		{"exact ID", mtls.AuthorizeIDs("spiffe://example.org/ns/prod/sa/web"), web, true},
		{"exact ID, other", mtls.AuthorizeIDs("spiffe://example.org/ns/prod/sa/db"), web, false},
		{"exact ID is not a prefix", mtls.AuthorizeIDs("spiffe://example.org/ns/prod"), web, false},
		{"DNS name, case and trailing dot", mtls.AuthorizeIDs("API.Example.org."), id("api.example.org"), true},
		{"DNS among several names", mtls.AuthorizeIDs("b.example.org"), id("a.example.org,b.example.org"), true},
		{"IP", mtls.AuthorizeIDs("10.0.0.1"), id("10.0.0.1"), true},
		{"IPv4-mapped IPv6 is the IPv4 address", mtls.AuthorizeIDs("::ffff:10.0.0.1"), id("10.0.0.1"), true},
		// A name keeps its kind. FromCertificate refuses such DNS SANs, but
		// an authorizer must not rely on it: these identities are built by
		// hand, as a careless caller could.
		{"IP rule, DNS SAN reading the address", mtls.AuthorizeIDs("127.0.0.1"), identity.Identity{DNS: []string{"127.0.0.1"}}, false},
		{"SPIFFE rule, DNS SAN reading the ID", mtls.AuthorizeIDs("spiffe://example.org/admin"),
			identity.Identity{DNS: []string{"spiffe://example.org/admin"}}, false},
		{"DNS rule, SPIFFE ID whose text has it", mtls.AuthorizeIDs("example.org"), id("spiffe://example.org"), false},
		{"invalid configured name refuses everyone", mtls.AuthorizeIDs("spiffe://example.org/ns/prod/sa/web", "xn--a.example"), web, false},
		{"typed names", mtls.AuthorizeNames(name(t, "api.example.org"), name(t, "10.0.0.1")), id("10.0.0.1"), true},
		{"typed names, zero name allows nothing", mtls.AuthorizeNames(identity.Name{}), identity.Identity{}, false},
		{"prefix with slash", mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"), web, true},
		{"prefix without slash", mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod"), web, true},
		{"prefix is the ID itself", mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"), id("spiffe://example.org/ns/prod"), true},
		{"prefix stops at a segment", mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"), id("spiffe://example.org/ns/prod-evil/sa/web"), false},
		{"prefix in another trust domain", mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"), id("spiffe://evil.org/ns/prod/sa/web"), false},
		{"prefix: whole trust domain", mtls.AuthorizePathPrefixes("spiffe://example.org/"), web, true},
		{"prefix needs a SPIFFE ID", mtls.AuthorizePathPrefixes("spiffe://example.org/"), id("api.example.org"), false},
		{"prefix that is no SPIFFE ID refuses", mtls.AuthorizePathPrefixes("example.org/ns"), web, false},
		{"trust domain", mtls.AuthorizeTrustDomains("example.org"), web, true},
		{"trust domain as URI", mtls.AuthorizeTrustDomains("spiffe://example.org"), web, true},
		{"other trust domain", mtls.AuthorizeTrustDomains("example.com"), web, false},
		{"trust domain needs a SPIFFE ID", mtls.AuthorizeTrustDomains("example.org"), id("example.org"), false},
		{"any: second allows", mtls.AuthorizeAny(mtls.AuthorizeIDs("x.example"), mtls.AuthorizeTrustDomains("example.org")), web, true},
		{"any: none allows", mtls.AuthorizeAny(mtls.AuthorizeIDs("x.example"), mtls.AuthorizeTrustDomains("example.com")), web, false},
		{"any of nothing", mtls.AuthorizeAny(), web, false},
		{"all: both allow", mtls.AuthorizeAll(mtls.AuthorizeTrustDomains("example.org"), mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod")), web, true},
		{"all: one refuses", mtls.AuthorizeAll(mtls.AuthorizeTrustDomains("example.org"), mtls.AuthorizePathPrefixes("spiffe://example.org/ns/dev")), web, false},
		{"all of nothing", mtls.AuthorizeAll(), web, false},
		{"predicate", mtls.AuthorizeFunc(func(i identity.Identity) bool { return i.SPIFFE.Path() == "/ns/prod/sa/web" }), web, true},
		{"predicate refuses", mtls.AuthorizeFunc(func(identity.Identity) bool { return false }), web, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.a(tt.id, nil)
			if (err == nil) != tt.allow {
				t.Fatalf("allow = %v (%v), want %v", err == nil, err, tt.allow)
			}
			if err != nil && !errors.Is(err, mtls.ErrUnauthorized) {
				t.Errorf("refusal %v does not wrap ErrUnauthorized", err)
			}
		})
	}
}
