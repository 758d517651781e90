package namematch

import (
	"testing"

	"github.com/mica-pki/mica/identity"
)

func TestMatch(t *testing.T) {
	name := func(s string) identity.Name {
		n, err := identity.ParseName(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"web.example.org", "web.example.org", true},
		{"web.example.org", "WEB.example.org.", true},
		{"web.example.org", "a.web.example.org", false},
		{"*.example.org", "a.b.example.org", true},
		{"*.example.org", "example.org", false},
		{"*.example.org", "badexample.org", false},
		{"10.1.0.0/16", "10.1.200.3", true},
		{"10.1.0.0/16", "10.2.0.1", false},
		{"10.0.0.1", "10.0.0.1", true},
		{"spiffe://example.org/billing/", "spiffe://example.org/billing/api", true},
		{"spiffe://example.org/billing/", "spiffe://example.org/billingx", false},
		{"spiffe://example.org/x", "spiffe://example.org/x", true},
		{"spiffe://example.org/x", "spiffe://example.org/x/y", false},
	}
	for _, tc := range tests {
		p, err := Parse(tc.pattern)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.pattern, err)
		}
		if got := p.Match(name(tc.name)); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
	// Kinds never cross: a DNS name that reads like an address or a
	// network pattern, and the other way round.
	dnsLike, _ := identity.DNSName("10-0-0-1.example.org")
	for _, pat := range []string{"10.0.0.0/8", "10.0.0.1", "spiffe://example.org/"} {
		p, _ := Parse(pat)
		if p.Match(dnsLike) {
			t.Errorf("%q matched the DNS name %s", pat, dnsLike)
		}
	}
	p, _ := Parse("*.example.org")
	if p.Match(name("spiffe://example.org/a.example.org")) {
		t.Error("a DNS pattern matched a SPIFFE ID")
	}
	for _, bad := range []string{"", "10.0.0.0/33", "*.", "xn--a.example", "spiffe://bad domain/"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if !Any([]Pattern{p}, []identity.Name{name("10.0.0.1"), name("a.example.org")}) {
		t.Error("Any missed a match")
	}
}
