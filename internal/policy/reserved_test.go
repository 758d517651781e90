package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/mica-pki/mica/identity"
)

func reservedConfig(profiles map[string]ProfileConfig) Config {
	local, _ := identity.ParseName("localhost")
	lo, _ := identity.ParseName("127.0.0.1")
	return Config{TrustDomain: "example.org", Profiles: profiles,
		Reserved: Reserved{SPIFFEPath: "/mica", Names: []identity.Name{local, lo}, ProfilePrefix: "mica-"}}
}

func TestReservedPatternsRefusedAtLoad(t *testing.T) {
	tests := []struct {
		name string
		pc   ProfileConfig
		want string
	}{
		{"spiffe under /mica", ProfileConfig{SPIFFE: []string{"/mica/**"}}, "reserved namespace"},
		{"an admin's exact ID", ProfileConfig{SPIFFE: []string{"/mica/admin/alice"}}, "reserved namespace"},
		{"a server DNS name", ProfileConfig{DNS: []string{"localhost"}}, "server's own names"},
		{"a server address", ProfileConfig{IPs: []string{"127.0.0.1"}}, "server's own addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(reservedConfig(map[string]ProfileConfig{"svc": tt.pc}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			// The same pattern is fine in one of mica's own profiles.
			if _, err := New(reservedConfig(map[string]ProfileConfig{"mica-x": tt.pc})); err != nil {
				t.Fatalf("reserved profile refused: %v", err)
			}
		})
	}
}

func TestReservedNamesRefusedAtIssuance(t *testing.T) {
	e, err := New(reservedConfig(map[string]ProfileConfig{
		"wide":       {SPIFFE: []string{"/**", "/*/admin/*"}, DNS: []string{"*.example.org"}, IPs: []string{"127.0.0.0/8"}},
		"mica-admin": {SPIFFE: []string{"/mica/admin/*"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := e.Profile("wide")
	if len(info.CoversReserved) != 1 || !strings.Contains(info.CoversReserved[0], "127.0.0.1") {
		t.Errorf("CoversReserved = %q, want the server address 127.0.0.1 reported once", info.CoversReserved)
	}
	for _, name := range []string{"spiffe://example.org/mica", "spiffe://example.org/mica/admin/alice", "127.0.0.1", "::ffff:127.0.0.1"} {
		id, err := identity.Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		var denied *DeniedError
		if err := e.CheckIdentity("wide", id); !errors.As(err, &denied) || denied.Reason != ReasonReservedName {
			t.Errorf("%s under wide: %v, want %s", name, err, ReasonReservedName)
		}
	}
	// Neighbours of reserved names are ordinary; kinds never mix: a DNS
	// pattern cannot make an address reserved or the other way round.
	for _, name := range []string{"spiffe://example.org/micah", "spiffe://example.org/x/mica", "127.0.0.2", "mica.example.org"} {
		id, _ := identity.Parse(name)
		if err := e.CheckIdentity("wide", id); err != nil {
			t.Errorf("%s under wide: %v", name, err)
		}
	}
	admin, _ := identity.Parse("spiffe://example.org/mica/admin/alice")
	if err := e.CheckIdentity("mica-admin", admin); err != nil {
		t.Errorf("admin name under mica-admin: %v", err)
	}
}
