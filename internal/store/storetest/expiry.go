package storetest

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testCertificatesByExpiry checks the inventory gauges' aggregate: live
// certificates only (revoked and expired ones are left out), each in the
// first window its NotAfter falls in, windows closed at the lower end.
func testCertificatesByExpiry(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	if got, err := s.CertificatesByExpiry(ctx, base); err != nil || len(got) != 0 {
		t.Fatalf("CertificatesByExpiry on an empty store = %v, %v; want nothing", got, err)
	}
	add := func(profile string, left time.Duration) *store.Issuance {
		iss := NewIssuance(0)
		iss.Certificate.Profile, iss.Event.Profile = profile, profile
		iss.Certificate.NotAfter = base.Add(left)
		record(t, s, iss)
		return iss
	}
	for _, left := range []time.Duration{time.Minute, 59 * time.Minute, time.Hour, 23 * time.Hour, 3 * 24 * time.Hour, 29 * 24 * time.Hour, 90 * 24 * time.Hour} {
		add("web", left)
	}
	add("batch", 2*time.Hour)
	add("batch", 2*time.Hour)
	add("batch", -time.Second) // expired: not counted
	add("batch", 0)            // expires this instant: still live, like Filter's active
	revoked := add("batch", time.Hour/2)
	ev := newEvent(store.ActionCertRevoked, revoked.Certificate.Identity)
	ev.Serial = revoked.Certificate.Serial
	if err := s.Revoke(ctx, revoked.Certificate.Serial, 1, base, ev); err != nil {
		t.Fatal(err)
	}

	got, err := s.CertificatesByExpiry(ctx, base)
	if err != nil {
		t.Fatalf("CertificatesByExpiry: %v", err)
	}
	type key struct {
		profile string
		window  store.ExpiryWindow
	}
	have := map[key]int64{}
	for _, c := range got {
		if c.Count == 0 {
			t.Errorf("CertificatesByExpiry returned a zero count: %+v", c)
		}
		have[key{c.Profile, c.Window}] += c.Count
	}
	want := map[key]int64{
		{"web", store.Within1h}: 2, {"web", store.Within24h}: 2, {"web", store.Within7d}: 1,
		{"web", store.Within30d}: 1, {"web", store.Later}: 1,
		{"batch", store.Within1h}: 1, {"batch", store.Within24h}: 2,
	}
	if !maps.Equal(have, want) {
		t.Errorf("CertificatesByExpiry(now) = %v\nwant %v", have, want)
	}
	// A day later the same certificates have moved to sooner windows or
	// expired.
	later, err := s.CertificatesByExpiry(ctx, base.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range later {
		n += c.Count
	}
	if n != 3 {
		t.Errorf("a day later %d certificates are live, want 3 (%v)", n, later)
	}
}
