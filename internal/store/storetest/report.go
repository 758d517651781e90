package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// testExpiringReport checks which certificates the expiry report counts as
// at risk and how it groups them: superseded, revoked, expired and later
// certificates are left out, a newer certificate that is itself revoked or
// expired does not supersede, and groups and counts stay complete when the
// list is cut.
func testExpiringReport(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	now := base
	const ops, ci = "spiffe://example.test/mica/admin/ops", "spiffe://example.test/mica/admin/ci"
	// cert records a certificate owned by owner and requested by a token.
	cert := func(id, profile, owner string, expiresIn time.Duration) *store.Issuance {
		iss := NewIssuance(0)
		c := &iss.Certificate
		requester := "token:" + id
		c.Identity, c.SANs, c.Profile, c.Requester, c.Owner = id, []string{id}, profile, requester, owner
		c.NotBefore, c.NotAfter = now.Add(-time.Hour), now.Add(expiresIn)
		iss.Event.Identity, iss.Event.Profile, iss.Event.Actor = id, profile, requester
		record(t, s, iss)
		return iss
	}
	revoke := func(iss *store.Issuance) {
		ev := newEvent(store.ActionCertRevoked, iss.Certificate.Identity)
		ev.Serial = iss.Certificate.Serial
		if err := s.Revoke(ctx, iss.Certificate.Serial, 1, now, ev); err != nil {
			t.Fatal(err)
		}
	}
	// svc/a renewed: the first certificate is superseded, its successor at risk.
	superseded := cert("spiffe://example.test/a", "service", ops, 2*time.Hour)
	renewedA := cert("spiffe://example.test/a", "service", ops, 3*time.Hour)
	// svc/b revoked: not at risk, whatever its expiry.
	revoke(cert("spiffe://example.test/b", "service", ops, time.Hour))
	// svc/c expires after the window; svc/d has already expired.
	cert("spiffe://example.test/c", "service", ops, 100*time.Hour)
	cert("spiffe://example.test/d", "service", ops, -time.Minute)
	// svc/e's newer certificate was revoked, svc/f's has expired: neither
	// supersedes, so the older ones are at risk.
	atRiskE := cert("spiffe://example.test/e", "service", ops, 5*time.Hour)
	revoke(cert("spiffe://example.test/e", "service", ops, 20*time.Hour))
	atRiskF := cert("spiffe://example.test/f", "service", ops, 6*time.Hour)
	cert("spiffe://example.test/f", "service", ops, -time.Second)
	// svc/g renewed twice, the latest revoked: the middle one is at risk
	// again, the first stays superseded by it.
	supersededG := cert("spiffe://example.test/g", "service", ops, 90*time.Minute)
	atRiskG := cert("spiffe://example.test/g", "service", ops, 7*time.Hour)
	revoke(cert("spiffe://example.test/g", "service", ops, 30*time.Hour))
	// svc/h: the second certificate outlives the first, a third outlives
	// both, then the second is revoked: the first stays superseded (by the
	// third), the third is at risk.
	supersededH := cert("spiffe://example.test/h", "service", ops, 8*time.Hour)
	secondH := cert("spiffe://example.test/h", "service", ops, 20*time.Hour)
	atRiskH := cert("spiffe://example.test/h", "service", ops, 40*time.Hour)
	revoke(secondH)
	// Another profile, two owners.
	w1 := cert("web1.example.test", "web", ci, 30*time.Hour)
	w2 := cert("web2.example.test", "web", ci, 10*time.Hour)
	w3 := cert("web3.example.test", "web", ops, 47*time.Hour)

	rep, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(48 * time.Hour)})
	if err != nil {
		t.Fatalf("ExpiringReport: %v", err)
	}
	type group struct {
		profile, owner string
		earliest       time.Time
		serials        []string
	}
	want := []group{
		{"service", ops, renewedA.Certificate.NotAfter, []string{renewedA.Certificate.Serial, atRiskE.Certificate.Serial, atRiskF.Certificate.Serial, atRiskG.Certificate.Serial, atRiskH.Certificate.Serial}},
		{"web", ci, w2.Certificate.NotAfter, []string{w2.Certificate.Serial, w1.Certificate.Serial}},
		{"web", ops, w3.Certificate.NotAfter, []string{w3.Certificate.Serial}},
	}
	if rep.Total != 8 || rep.Listed != 8 || len(rep.Groups) != len(want) {
		t.Fatalf("report: total %d, listed %d, %d groups; want 8, 8, %d\n%s", rep.Total, rep.Listed, len(rep.Groups), len(want), describe(rep))
	}
	for i, w := range want {
		g := rep.Groups[i]
		if g.Profile != w.profile || g.Owner != w.owner || g.Count != len(w.serials) || !g.EarliestExpiry.Equal(w.earliest) {
			t.Errorf("group %d = %s/%s count %d earliest %v; want %s/%s count %d earliest %v",
				i, g.Profile, g.Owner, g.Count, g.EarliestExpiry, w.profile, w.owner, len(w.serials), w.earliest)
		}
		var got []string
		for _, c := range g.Certificates {
			got = append(got, c.Serial)
			if len(c.DER) != 0 || c.Status != store.StatusActive || c.Fingerprint == "" || len(c.SANs) != 1 ||
				c.Owner != w.owner || !strings.HasPrefix(c.Requester, "token:") {
				t.Errorf("listed certificate %s: %+v; want the record without DER", c.Serial, c)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(w.serials) {
			t.Errorf("group %d lists %v, want %v (soonest expiry first)", i, got, w.serials)
		}
	}
	for _, g := range rep.Groups {
		for _, c := range g.Certificates {
			if c.Serial == superseded.Certificate.Serial || c.Serial == supersededG.Certificate.Serial || c.Serial == supersededH.Certificate.Serial {
				t.Errorf("superseded certificate %s is listed", c.Serial)
			}
		}
	}

	t.Run("profile", func(t *testing.T) {
		rep, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(48 * time.Hour), Profile: "web"})
		if err != nil || rep.Total != 3 || len(rep.Groups) != 2 || rep.Groups[0].Profile != "web" {
			t.Fatalf("web only: %v\n%s", err, describe(rep))
		}
	})
	t.Run("limit cuts the list, not the groups", func(t *testing.T) {
		rep, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(48 * time.Hour), Limit: 2})
		if err != nil || rep.Total != 8 || rep.Listed != 2 || len(rep.Groups) != 3 || rep.Groups[2].Count != 1 || len(rep.Groups[2].Certificates) != 0 {
			t.Fatalf("limit 2: %v\n%s", err, describe(rep))
		}
	})
	t.Run("narrow window", func(t *testing.T) {
		rep, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(4 * time.Hour)})
		if err != nil || rep.Total != 1 || len(rep.Groups) != 1 || rep.Groups[0].Certificates[0].Serial != renewedA.Certificate.Serial {
			t.Fatalf("4h window: %v\n%s", err, describe(rep))
		}
	})
	t.Run("empty", func(t *testing.T) {
		rep, err := s.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(time.Minute)})
		if err != nil || rep.Total != 0 || rep.Groups == nil || len(rep.Groups) != 0 {
			t.Fatalf("nothing at risk: %v, %+v; want an empty, non-nil list of groups", err, rep)
		}
	})
	t.Run("bad filter", func(t *testing.T) {
		for _, f := range []store.ExpiringFilter{{Before: now}, {Now: now, Before: now}, {Now: now, Before: now.Add(time.Hour), Limit: -1}} {
			if _, err := s.ExpiringReport(ctx, f); err == nil {
				t.Errorf("filter %+v: no error", f)
			}
		}
	})
}

func describe(r store.ExpiringReport) string {
	out := fmt.Sprintf("total %d listed %d\n", r.Total, r.Listed)
	for _, g := range r.Groups {
		out += fmt.Sprintf("  %s / %s: %d, earliest %v\n", g.Profile, g.Owner, g.Count, g.EarliestExpiry)
		for _, c := range g.Certificates {
			out += fmt.Sprintf("    %s %s %v\n", c.Serial, c.Identity, c.NotAfter)
		}
	}
	return out
}
