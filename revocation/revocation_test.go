package revocation

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
)

func TestSet(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name        string
		snapshot    *Snapshot
		events      []Event
		wantSerials []string
		wantDenied  []string
		wantSeq     int64
	}{
		{"Empty", nil, nil, []string{}, []string{}, 0},
		{"RevokeAndDeny", nil, []Event{
			{Seq: 3, Kind: KindRevoked, Serial: "ab", NotAfter: now.Add(time.Hour)},
			{Seq: 5, Kind: KindDenied, Identity: "spiffe://x/a"},
		}, []string{"ab"}, []string{"spiffe://x/a"}, 5},
		{"AllowUndoesDeny", nil, []Event{
			{Seq: 1, Kind: KindDenied, Identity: "spiffe://x/a"},
			{Seq: 2, Kind: KindAllowed, Identity: "spiffe://x/a"},
		}, []string{}, []string{}, 2},
		{"ReplayIgnored", &Snapshot{Seq: 10, Revoked: []Event{{Serial: "01", NotAfter: now.Add(time.Hour)}}}, []Event{
			{Seq: 9, Kind: KindRevoked, Serial: "old"},
			{Seq: 11, Kind: KindRevoked, Serial: "02", NotAfter: now.Add(time.Hour)},
		}, []string{"01", "02"}, []string{}, 11},
		{"ExpiredPruned", nil, []Event{
			{Seq: 1, Kind: KindRevoked, Serial: "gone", NotAfter: now.Add(-time.Minute)},
		}, []string{}, []string{}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Set
			if tc.snapshot != nil {
				s.Reset(*tc.snapshot)
			}
			for _, e := range tc.events {
				s.Apply(e)
			}
			s.Prune(now)
			if got := s.Serials(); !slices.Equal(got, tc.wantSerials) {
				t.Errorf("serials %v, want %v", got, tc.wantSerials)
			}
			if got := s.Identities(); !slices.Equal(got, tc.wantDenied) {
				t.Errorf("denied %v, want %v", got, tc.wantDenied)
			}
			if s.Seq() != tc.wantSeq {
				t.Errorf("seq %d, want %d", s.Seq(), tc.wantSeq)
			}
			for _, serial := range tc.wantSerials {
				if !s.Revoked(serial) {
					t.Errorf("Revoked(%s) = false", serial)
				}
			}
		})
	}
}

// TestDeniedNamesKeepTheirKind: the deny list is read as typed names, so
// an identity is denied only by a name of the same kind.
func TestDeniedNamesKeepTheirKind(t *testing.T) {
	var s Set
	s.Reset(Snapshot{Seq: 1, Denied: []string{"10.0.0.1", "spiffe://example.org/admin", "Host.Example."}})
	s.Apply(Event{Seq: 2, Kind: KindDenied, Identity: "::ffff:10.0.0.2"})
	ip := func(a string) identity.Identity { return identity.Identity{IPs: []netip.Addr{netip.MustParseAddr(a)}} }
	tests := []struct {
		name string
		id   identity.Identity
		want bool
	}{
		{"IP denied", ip("10.0.0.1"), true},
		{"mapped IP denied as its IPv4 address", ip("10.0.0.2"), true},
		{"DNS name normalized", identity.Identity{DNS: []string{"host.example"}}, true},
		{"SPIFFE ID denied", identity.Identity{SPIFFE: spiffeid.RequireFromString("spiffe://example.org/admin")}, true},
		// Built by hand: certificates cannot carry such DNS names, but the
		// set must not rely on it.
		{"DNS text of a denied IP", identity.Identity{DNS: []string{"10.0.0.1"}}, false},
		{"DNS text of a denied SPIFFE ID", identity.Identity{DNS: []string{"spiffe://example.org/admin"}}, false},
		{"other IP", ip("10.0.0.3"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := s.DeniedAny(tt.id); got != tt.want {
				t.Errorf("DeniedAny(%v) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
	if !s.Denied("10.0.0.1") || !s.Denied("HOST.example") || s.Denied("not a name") {
		t.Error("Denied does not read its argument as a typed name")
	}
	s.Apply(Event{Seq: 3, Kind: KindAllowed, Identity: "10.0.0.1"})
	if s.Denied("10.0.0.1") {
		t.Error("an allowed name is still denied")
	}
}

// TestChanged: the channel closes on a change, not on an event seen before.
func TestChanged(t *testing.T) {
	var s Set
	ch := s.Changed()
	s.Apply(Event{Seq: 1, Kind: KindRevoked, Serial: "ab"})
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not close on Apply")
	}
	ch = s.Changed()
	s.Apply(Event{Seq: 1, Kind: KindRevoked, Serial: "cd"}) // a replay
	select {
	case <-ch:
		t.Fatal("Changed closed on an event applied before")
	default:
	}
	s.Reset(Snapshot{Seq: 5})
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not close on Reset")
	}
}
