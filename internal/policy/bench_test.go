package policy

import (
	"net/netip"
	"testing"

	"github.com/mica-pki/mica/identity"
)

func benchRequest(b *testing.B, profile string) Request {
	return Request{
		Profile: profile,
		Identity: identity.Identity{
			SPIFFE: sid("spiffe://example.org/billing/api"),
			DNS:    []string{"api.example.org", "db.svc.example.internal"},
			IPs:    addrs("10.1.2.3"),
		},
		PublicKey: mustKey(b, "ecdsa-p256"),
		Method:    MethodToken,
		Requester: "admin",
		Source:    netip.MustParseAddr("10.0.0.5"),
	}
}

func benchConfig(rule string) Config {
	return Config{TrustDomain: "example.org", Profiles: map[string]ProfileConfig{"service": {
		SPIFFE:   []string{"/ns/*/sa/*", "/billing/*"},
		DNS:      []string{"*.svc.example.internal", "api.example.org"},
		IPs:      []string{"10.0.0.0/8", "fd00::/8"},
		Networks: []string{"10.0.0.0/8"},
		Rule:     rule,
	}}}
}

func BenchmarkDecide(b *testing.B) {
	for _, bc := range []struct{ name, rule string }{
		{"no-rule", ""},
		{"rule", `request.method == "renew" || request.spiffe_id.startsWith("spiffe://example.org/billing/")`},
		{"rule-over-dns", `request.dns.all(d, d.endsWith(".example.org") || d.endsWith(".example.internal")) && request.ttl_seconds <= 86400`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := mustEngine(b, benchConfig(bc.rule))
			req := benchRequest(b, "service")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Decide(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecideRunawayRule shows what the cost limit bounds a runaway
// rule to.
func BenchmarkDecideRunawayRule(b *testing.B) {
	cfg := benchConfig(testConfig().Profiles["looping"].Rule)
	e := mustEngine(b, cfg)
	req := benchRequest(b, "service")
	for b.Loop() {
		if _, err := e.Decide(req); err == nil {
			b.Fatal("the runaway rule allowed the request")
		}
	}
}

func BenchmarkNew(b *testing.B) {
	cfg := benchConfig(`request.method == "renew" || request.spiffe_id.startsWith("spiffe://example.org/billing/")`)
	for b.Loop() {
		if _, err := New(cfg); err != nil {
			b.Fatal(err)
		}
	}
}
