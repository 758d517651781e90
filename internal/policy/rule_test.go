package policy

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
)

// TestRuleSeesRequest checks every field a rule can read, so a rename in
// RuleRequest cannot silently break operators' rules.
func TestRuleSeesRequest(t *testing.T) {
	rules := map[string]string{
		"profile":     `request.profile == "r"`,
		"spiffe_id":   `request.spiffe_id == "spiffe://example.org/a/b"`,
		"dns":         `request.dns == ["x.example.org", "y.example.org"]`,
		"dns size":    `request.dns.size() == 2 && request.dns.all(d, d.endsWith(".example.org"))`,
		"ips":         `request.ips == ["10.0.0.1", "fd00::1"]`,
		"ttl_seconds": `request.ttl_seconds == 7200`,
		"key_type":    `request.key_type == "rsa"`,
		"key_bits":    `request.key_bits == 3072`,
		"method":      `request.method == "acme"`,
		"requester":   `request.requester == "alice"`,
		"source":      `request.source == "192.0.2.1"`,
		"string ext":  `request.requester.upperAscii() == "ALICE"`,
	}
	req := Request{
		Profile: "r",
		Identity: identity.Identity{
			SPIFFE: sid("spiffe://example.org/a/b"),
			DNS:    []string{"X.example.org", "y.example.org"},
			IPs:    addrs("::ffff:10.0.0.1", "fd00::1"),
		},
		TTL: 2 * time.Hour, PublicKey: mustKey(t, "rsa-3072"), Method: MethodACME, Requester: "alice",
		Source: netip.MustParseAddr("::ffff:192.0.2.1"),
	}
	for name, rule := range rules {
		t.Run(name, func(t *testing.T) {
			e := mustEngine(t, Config{TrustDomain: "example.org", Profiles: map[string]ProfileConfig{"r": {
				SPIFFE: []string{"/a/*"}, DNS: []string{"*.example.org"}, IPs: []string{"10.0.0.0/8", "fd00::/8"},
				KeyTypes: []string{"rsa"}, Rule: rule,
			}}})
			if _, err := e.Decide(req); err != nil {
				t.Errorf("rule %s: %v", rule, err)
			}
		})
	}
}

// TestRuleEmptyFields checks what a rule sees for absent parts: empty
// strings and empty lists, never a missing field that errors.
func TestRuleEmptyFields(t *testing.T) {
	e := mustEngine(t, Config{Profiles: map[string]ProfileConfig{"r": {
		DNS:  []string{"a.example.org"},
		Rule: `request.spiffe_id == "" && request.ips.size() == 0 && request.source == "" && request.method == "" && request.key_type == "ed25519" && request.key_bits == 256`,
	}}})
	if _, err := e.Decide(Request{Profile: "r", Identity: identity.Identity{DNS: []string{"a.example.org"}}, PublicKey: mustKey(t, "ed25519")}); err != nil {
		t.Error(err)
	}
	e = mustEngine(t, Config{Profiles: map[string]ProfileConfig{"r": {IPs: []string{"10.0.0.1"}, Rule: `request.dns.size() == 0`}}})
	if _, err := e.Decide(Request{Profile: "r", Identity: identity.Identity{IPs: addrs("10.0.0.1")}, PublicKey: mustKey(t, "ed25519")}); err != nil {
		t.Error(err)
	}
}

// TestRuleCostLimitLeavesRoomForLongSANLists checks that the cost limit
// stops runaway rules (see TestDecideDeny) but not an ordinary rule over a
// long list of names.
func TestRuleCostLimitLeavesRoomForLongSANLists(t *testing.T) {
	e := mustEngine(t, Config{Profiles: map[string]ProfileConfig{"r": {
		DNS:  []string{"*.svc.example.internal"},
		Rule: `request.dns.all(d, d.endsWith(".example.org") || d.endsWith(".example.internal")) && request.ttl_seconds <= 86400`,
	}}})
	var names []string
	for i := range 200 {
		names = append(names, "host-"+strconv.Itoa(i)+".svc.example.internal")
	}
	if _, err := e.Decide(Request{Profile: "r", Identity: identity.Identity{DNS: names}, PublicKey: mustKey(t, "ecdsa-p256")}); err != nil {
		t.Error(err)
	}
}
