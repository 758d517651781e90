package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// discovered makes a discovered certificate with a random body.
func discovered(identity, class string, notAfter time.Time, findings ...string) store.DiscoveredCertificate {
	der := make([]byte, 600)
	rand.Read(der)
	fp := sha256.Sum256(der)
	return store.DiscoveredCertificate{
		Fingerprint: hex.EncodeToString(fp[:]), Serial: hex.EncodeToString(der[:8]), Subject: "CN=" + identity, Issuer: "CN=Some CA",
		Identity: identity, SANs: []string{identity}, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter,
		KeyType: "ecdsa-p256", Class: class, Findings: findings, DER: der,
	}
}

func seen(c store.DiscoveredCertificate, location string, findings ...string) store.Sighting {
	return store.Sighting{Fingerprint: c.Fingerprint, Location: location, Findings: findings, Detail: "seen at " + location}
}

// testDiscovery checks discovered certificates: a report records
// certificates and sightings once however often they are seen, a rescan
// ends the sightings it no longer finds (at the locations it covered, and
// under the trees it finished), a certificate whose last sighting ended is
// gone and comes back when seen again, findings combine the certificate's
// own and its live sightings', and the aggregates count live ones only.
func testDiscovery(t *testing.T, open Opener) {
	h := openStore(t, open)
	s, ok := h.Store.(store.DiscoveryStore)
	if !ok {
		t.Fatalf("%T does not implement store.DiscoveryStore", h.Store)
	}
	ctx := context.Background()
	now := base
	web := discovered("web.example.test", "external", now.Add(10*24*time.Hour))
	self := discovered("forgotten.example.test", "self-signed", now.Add(-time.Hour), "self-signed")
	file := discovered("files.example.test", "mica", now.Add(200*24*time.Hour))
	file.Owner = "team-files"

	r1, err := s.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", ScanID: "scan1", At: now,
		Certificates: []store.DiscoveredCertificate{web, self, file},
		Sightings: []store.Sighting{seen(web, "tls://10.0.0.1:443", "missing-intermediate"), seen(web, "tls://10.0.0.2:443"),
			seen(self, "tls://10.0.0.3:443"), seen(file, "file://h1/etc/tls/a.pem", "key-world-readable")},
		Scanned: []string{"tls://10.0.0.1:443", "tls://10.0.0.2:443", "tls://10.0.0.3:443", "tls://10.0.0.4:443"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.New) != 3 || len(r1.Gone) != 0 || r1.SightingsGone != 0 {
		t.Fatalf("first report: %d new, %d gone, %d sightings gone; want 3, 0, 0", len(r1.New), len(r1.Gone), r1.SightingsGone)
	}
	get := func(fp string) store.DiscoveredCertificate {
		t.Helper()
		list, err := s.DiscoveredCertificates(ctx, store.DiscoveryFilter{IncludeGone: true, WithSightings: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.Fingerprint == fp {
				return c
			}
		}
		t.Fatalf("%s is not listed", fp)
		return store.DiscoveredCertificate{}
	}
	got := get(web.Fingerprint)
	if got.Identity != web.Identity || !got.NotAfter.Equal(web.NotAfter) || string(got.DER) != string(web.DER) || len(got.Sightings) != 2 ||
		!slices.Equal(got.Findings, []string{"missing-intermediate"}) || !got.FirstSeen.Equal(now) || !got.GoneAt.IsZero() {
		t.Errorf("read back %+v", got)
	}
	if got := get(file.Fingerprint); !slices.Equal(got.Findings, []string{"key-world-readable"}) || got.Owner != "team-files" {
		t.Errorf("file certificate: findings %v, owner %q", got.Findings, got.Owner)
	}

	// A rescan a minute later: 10.0.0.1 now serves another certificate,
	// 10.0.0.3 was not covered, and the file tree was finished without the
	// file.
	later := now.Add(time.Minute)
	other := discovered("web.example.test", "external", now.Add(60*24*time.Hour))
	other.Owner = "team-web"
	file.Owner = "someone-else"
	r2, err := s.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", ScanID: "scan2", At: later,
		Certificates: []store.DiscoveredCertificate{other, web},
		Sightings:    []store.Sighting{seen(other, "tls://10.0.0.1:443"), seen(web, "tls://10.0.0.2:443")},
		Scanned:      []string{"tls://10.0.0.1:443", "tls://10.0.0.2:443"},
		Complete:     []string{"file://h1/etc"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.New) != 1 || r2.New[0].Fingerprint != other.Fingerprint || r2.SightingsGone != 2 ||
		len(r2.Gone) != 1 || r2.Gone[0].Fingerprint != file.Fingerprint {
		t.Errorf("rescan: new %d, sightings gone %d, gone %+v; want the new certificate, two ended sightings, the file's certificate gone", len(r2.New), r2.SightingsGone, r2.Gone)
	}
	got = get(web.Fingerprint)
	if !got.GoneAt.IsZero() || len(got.Findings) != 0 || !got.LastSeen.Equal(later) || !got.FirstSeen.Equal(now) {
		t.Errorf("web after the rescan: %+v; want still seen (at 10.0.0.2), the ended sighting's finding dropped", got)
	}
	for _, sg := range got.Sightings {
		if (sg.Location == "tls://10.0.0.1:443") == sg.GoneAt.IsZero() {
			t.Errorf("sighting %s gone at %v", sg.Location, sg.GoneAt)
		}
	}
	if got := get(self.Fingerprint); !got.GoneAt.IsZero() {
		t.Errorf("a sighting the rescan did not cover ended: %+v", got)
	}
	// Another reporter's scan of the same place ends nothing of ours.
	if r, err := s.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "agent", ScanID: "x", At: later, Scanned: []string{"tls://10.0.0.2:443"}}); err != nil || r.SightingsGone != 0 {
		t.Errorf("another reporter's empty scan: %+v, %v", r, err)
	}

	// Seen again, the gone certificate is back, and keeps its owner.
	r3, err := s.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", ScanID: "scan3", At: later.Add(time.Minute),
		Certificates: []store.DiscoveredCertificate{file}, Sightings: []store.Sighting{seen(file, "file://h1/etc/tls/a.pem", "key-world-readable")}})
	if err != nil || len(r3.New) != 0 {
		t.Fatalf("re-sighting: %+v, %v", r3, err)
	}
	if got := get(file.Fingerprint); !got.GoneAt.IsZero() || got.Owner != "team-files" {
		t.Errorf("back again: %+v", got)
	}

	t.Run("PendingEvents", func(t *testing.T) {
		newOnes, gone, err := s.PendingDiscoveryEvents(ctx, 0)
		if err != nil || len(newOnes) != 4 || len(gone) != 0 {
			t.Fatalf("pending: %d new, %d gone, %v; want 4 and 0 (the file certificate came back)", len(newOnes), len(gone), err)
		}
		for _, c := range newOnes {
			if err := s.MarkDiscoveryEvent(ctx, c.Fingerprint, store.DiscoveredEvent, 7); err != nil {
				t.Fatal(err)
			}
		}
		if n, _, _ := s.PendingDiscoveryEvents(ctx, 0); len(n) != 0 {
			t.Errorf("%d still pending after marking", len(n))
		}
		if err := s.MarkDiscoveryEvent(ctx, "nope", store.DiscoveredEvent, 1); err == nil {
			t.Error("marking an unknown certificate succeeded")
		}
	})

	t.Run("Filters", func(t *testing.T) {
		for name, tc := range map[string]struct {
			f    store.DiscoveryFilter
			want int
		}{
			"live":          {store.DiscoveryFilter{}, 4},
			"class":         {store.DiscoveryFilter{Class: "self-signed"}, 1},
			"owner":         {store.DiscoveryFilter{Owner: "team-web"}, 1},
			"finding":       {store.DiscoveryFilter{Finding: "self-signed"}, 1},
			"expires":       {store.DiscoveryFilter{ExpiresBefore: now.Add(30 * 24 * time.Hour)}, 2},
			"identity":      {store.DiscoveryFilter{Identity: "web.example.test"}, 2},
			"limit, offset": {store.DiscoveryFilter{Limit: 2, Offset: 3}, 1},
		} {
			list, err := s.DiscoveredCertificates(ctx, tc.f)
			if err != nil || len(list) != tc.want {
				t.Errorf("%s: %d, %v; want %d", name, len(list), err, tc.want)
			}
		}
		if _, err := s.DiscoveredCertificates(ctx, store.DiscoveryFilter{Finding: "x' OR 1=1"}); err == nil {
			t.Error("a finding that is not a slug was accepted")
		}
	})

	t.Run("Aggregates", func(t *testing.T) {
		counts, err := s.DiscoveredByExpiry(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, c := range counts {
			got[c.Class+"/"+string(c.Window)] = c.Count
		}
		want := map[string]int64{"external/30d": 1, "external/more": 1, "self-signed/expired": 1, "mica/more": 1}
		if len(got) != len(want) {
			t.Errorf("by expiry %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("by expiry %v, want %v", got, want)
			}
		}
		findings, err := s.DiscoveredFindings(ctx)
		if err != nil || len(findings) != 2 || findings[0] != (store.FindingCount{Finding: "key-world-readable", Count: 1}) ||
			findings[1] != (store.FindingCount{Finding: "self-signed", Count: 1}) {
			t.Errorf("findings %+v, %v", findings, err)
		}
	})

	t.Run("ExpiringReport", func(t *testing.T) {
		rep, err := s.DiscoveredExpiring(ctx, store.ExpiringFilter{Now: now, Before: now.Add(90 * 24 * time.Hour), Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Total != 2 || rep.Listed != 1 || len(rep.Groups) != 2 || rep.Groups[0].Owner != "" || rep.Groups[1].Owner != "team-web" ||
			!rep.Groups[0].EarliestExpiry.Equal(web.NotAfter) {
			t.Errorf("report %+v", rep)
		}
		// A discovered copy of a certificate mica issued is in the issued
		// part of the report, not here.
		iss := NewIssuance(1)
		iss.Certificate.NotAfter = now.Add(24 * time.Hour)
		record(t, h.Store, iss)
		mine := discovered("svc", "mica", iss.Certificate.NotAfter)
		mine.Fingerprint, mine.DER = iss.Certificate.Fingerprint, iss.Certificate.DER
		if _, err := s.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", At: later, Certificates: []store.DiscoveredCertificate{mine},
			Sightings: []store.Sighting{seen(mine, "tls://10.0.0.9:443")}}); err != nil {
			t.Fatal(err)
		}
		if rep, err := s.DiscoveredExpiring(ctx, store.ExpiringFilter{Now: now, Before: now.Add(90 * 24 * time.Hour)}); err != nil || rep.Total != 2 {
			t.Errorf("with a discovered copy of an issued certificate: total %d, %v; want 2", rep.Total, err)
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		for name, b := range map[string]store.DiscoveryBatch{
			"no reporter":        {At: now},
			"no time":            {Reporter: "a"},
			"stray sighting":     {Reporter: "a", At: now, Sightings: []store.Sighting{seen(web, "tls://x:1")}},
			"certificate no DER": {Reporter: "a", At: now, Certificates: []store.DiscoveredCertificate{{Fingerprint: "ab", NotAfter: now}}},
		} {
			if _, err := s.RecordDiscovery(ctx, b); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	})
}
