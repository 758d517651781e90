package authority_test

import (
	"context"
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/store"
)

// clock is a settable clock for the authority.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func discoveryFixture(t *testing.T, owners []discover.OwnerRule) (*authoritytest.Fixture, *clock) {
	t.Helper()
	clk := &clock{t: time.Now()}
	o, err := discover.CompileOwners(owners)
	if err != nil {
		t.Fatal(err)
	}
	f := authoritytest.NewWith(t, func(c *authority.Config) {
		c.Clock = clk.now
		c.Discovery = authority.DiscoveryConfig{Owners: o, AgentProfiles: []string{"wide"}}
	})
	return f, clk
}

func chainDER(certs ...*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

// TestDiscoveryAuthorization: who may report and read discoveries and
// webhook state.
func TestDiscoveryAuthorization(t *testing.T) {
	f, _ := discoveryFixture(t, nil)
	ctx := context.Background()
	workload := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	agent := f.Principal(t, f.EnrollCred(t, "wide", "spiffe://example.org/hosts/h1").Issued)
	principals := map[string]authority.Principal{"workload": workload, "agent": agent, "auditor": f.Auditor, "operator": f.Operator, "admin": f.Admin}
	for name, want := range map[string]map[string]bool{
		"report":   {"agent": true, "operator": true, "admin": true},
		"read":     {"auditor": true, "operator": true, "admin": true},
		"webhooks": {"auditor": true, "operator": true, "admin": true},
	} {
		for who, p := range principals {
			var err error
			switch name {
			case "report":
				_, err = f.Authority.ReportDiscovery(ctx, p, authority.DiscoveryReport{})
			case "read":
				_, err = f.Authority.DiscoveredCertificates(ctx, p, store.DiscoveryFilter{})
			case "webhooks":
				_, err = f.Authority.WebhookStates(ctx, p, 0)
			}
			if (err == nil) != want[who] {
				t.Errorf("%s %s: %v, want allowed %v", who, name, err, want[who])
			}
			if err != nil && authority.KindOf(err) != authority.KindForbidden {
				t.Errorf("%s %s: refusal %v, want forbidden", who, name, err)
			}
		}
		if _, err := f.Authority.ReportDiscovery(ctx, authority.Principal{}, authority.DiscoveryReport{}); authority.KindOf(err) != authority.KindUnauthenticated {
			t.Errorf("an unauthenticated report: %v", err)
		}
	}
}

func TestReportDiscovery(t *testing.T) {
	f, clk := discoveryFixture(t, []discover.OwnerRule{{Owner: "team-other", Names: []string{"*.other.test"}}})
	ctx := context.Background()
	ds := f.Store.(store.DiscoveryStore)

	// Certificates as they are found: mica's own (recorded, revoked, and
	// one its CA signed but the inventory never saw), another CA's, a
	// self-signed one.
	web := f.Issue(t, "spiffe://example.org/billing/web")
	revoked := f.Issue(t, "spiffe://example.org/billing/revoked")
	if _, err := f.Authority.Revoke(ctx, f.Admin, revoked.Record.Serial, 1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	stray := f.PKI.Leaf(t, mustID(t, "stray.example.org"))
	otherRoot := discovertest.Issue(t, nil, discovertest.Spec{CN: "Other Root", IsCA: true})
	other := discovertest.Issue(t, otherRoot, discovertest.Spec{CN: "app.other.test", DNS: []string{"app.other.test"}})
	self := discovertest.Issue(t, nil, discovertest.Spec{CN: "self.test", DNS: []string{"self.test"}})

	report := authority.DiscoveryReport{ScanID: "scan-1", Host: "host1", Sightings: []authority.ReportedSighting{
		{Location: "tls://10.0.0.1:443", Chain: chainDER(web.Certificate, web.Chain[0]), Address: "10.0.0.1", TLSVersion: 0x0304},
		{Location: "tls://10.0.0.2:443", Chain: chainDER(revoked.Certificate), Address: "10.0.0.2"},
		{Location: "file://host1/etc/tls/stray.pem", Chain: chainDER(stray.Cert), Format: "pem", KeyPath: "/etc/tls/stray.key", KeyWorldReadable: true},
		{Location: "tls://10.0.0.3:8443?sni=app.other.test", Chain: chainDER(other.Cert), Address: "10.0.0.3"},
		{Location: "tls://10.0.0.4:443", Chain: chainDER(self.Cert), Address: "10.0.0.4"},
		{Location: "tls://10.0.0.5:443", Chain: chainDER(web.Certificate, web.Chain[0]), Address: "10.0.0.5"},
	}, Scanned: []string{"tls://10.0.0.1:443", "tls://10.0.0.2:443", "tls://10.0.0.3:8443?sni=app.other.test", "tls://10.0.0.4:443", "tls://10.0.0.5:443"}}
	sum, err := f.Authority.ReportDiscovery(ctx, f.Operator, report)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sightings != 6 || sum.Certificates != 5 || sum.New != 5 || sum.Gone != 0 {
		t.Errorf("summary %+v", sum)
	}
	list, err := f.Authority.DiscoveredCertificates(ctx, f.Auditor, store.DiscoveryFilter{WithSightings: true})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.DiscoveredCertificate{}
	for _, c := range list {
		byID[c.Identity] = c
	}
	want := map[string]struct {
		class    string
		findings []string
		owner    string
	}{
		"spiffe://example.org/billing/web":     {"mica", nil, authoritytest.AdminID},
		"spiffe://example.org/billing/revoked": {"mica", []string{"mica-revoked", "missing-intermediate"}, authoritytest.AdminID},
		"stray.example.org":                    {"mica", []string{"key-world-readable", "mica-misplaced", "mica-not-in-inventory"}, ""},
		"app.other.test":                       {"external", []string{"missing-intermediate"}, "team-other"},
		"self.test":                            {"self-signed", []string{"name-mismatch", "self-signed"}, ""},
	}
	for id, w := range want {
		c, ok := byID[id]
		if !ok {
			t.Errorf("%s was not recorded", id)
			continue
		}
		if c.Class != w.class || !slices.Equal(c.Findings, w.findings) || c.Owner != w.owner {
			t.Errorf("%s: class %s, findings %v, owner %q; want %s, %v, %q", id, c.Class, c.Findings, c.Owner, w.class, w.findings, w.owner)
		}
	}
	if n := len(byID["spiffe://example.org/billing/web"].Sightings); n != 2 {
		t.Errorf("the web certificate has %d sightings, want 2", n)
	}
	discoveredEvents := func() []store.Event {
		evs, err := f.Store.Events(ctx, store.EventFilter{Actions: []store.Action{store.ActionCertDiscovered, store.ActionCertDisappeared}})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	if evs := discoveredEvents(); len(evs) != 5 || evs[0].Actor != authoritytest.OperatorID || !strings.Contains(evs[0].Detail, "seen at tls://10.0.0.1:443") {
		t.Errorf("events %+v, want five cert.discovered by the operator", evs)
	}
	if newOnes, gone, _ := ds.PendingDiscoveryEvents(ctx, 0); len(newOnes)+len(gone) != 0 {
		t.Errorf("%d events still pending after the report", len(newOnes)+len(gone))
	}

	// A rescan where the self-signed endpoint is closed: it disappears.
	clk.advance(time.Minute)
	sum, err = f.Authority.ReportDiscovery(ctx, f.Operator, authority.DiscoveryReport{ScanID: "scan-2", Scanned: []string{"tls://10.0.0.4:443"}})
	if err != nil || sum.Gone != 1 || sum.SightingsGone != 1 {
		t.Fatalf("rescan: %+v, %v", sum, err)
	}
	evs := discoveredEvents()
	if last := evs[len(evs)-1]; last.Action != store.ActionCertDisappeared || last.Identity != "self.test" {
		t.Errorf("last event %+v, want self.test disappeared", last)
	}
	if n, err := f.Authority.FlushDiscoveryEvents(ctx); err != nil || n != 0 {
		t.Errorf("flush after clean reports: %d, %v", n, err)
	}
	// A report recorded by a server that died before writing its events:
	// the next start writes them.
	lost := discovertest.Issue(t, nil, discovertest.Spec{CN: "lost.test", DNS: []string{"lost.test"}})
	fp := authority.Fingerprint(lost.Cert.Raw)
	if _, err := ds.RecordDiscovery(ctx, store.DiscoveryBatch{Reporter: "admin", At: clk.now(), Certificates: []store.DiscoveredCertificate{
		{Fingerprint: fp, Identity: "lost.test", Class: "self-signed", NotAfter: lost.Cert.NotAfter, DER: lost.Cert.Raw}},
		Sightings: []store.Sighting{{Fingerprint: fp, Location: "tls://10.0.0.8:443"}}}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Authority.FlushDiscoveryEvents(ctx); err != nil || n != 1 {
		t.Errorf("flush after a lost event: %d, %v; want 1", n, err)
	}
	if evs := discoveredEvents(); evs[len(evs)-1].Identity != "lost.test" || evs[len(evs)-1].Actor != authority.SystemPrincipal {
		t.Errorf("the flushed event: %+v", evs[len(evs)-1])
	}

	// Bad reports are refused whole and change nothing.
	before := len(discoveredEvents())
	for name, r := range map[string]authority.DiscoveryReport{
		"bad location":      {Sightings: []authority.ReportedSighting{{Location: "tls://x", Chain: chainDER(self.Cert)}}},
		"bad certificate":   {Sightings: []authority.ReportedSighting{{Location: "tls://x:1", Chain: [][]byte{{0x30, 0x00}}}}},
		"no certificate":    {Sightings: []authority.ReportedSighting{{Location: "tls://x:1"}}},
		"address on a file": {Sightings: []authority.ReportedSighting{{Location: "file://h/x", Chain: chainDER(self.Cert), Address: "10.0.0.1"}}},
		"file as scanned":   {Scanned: []string{"file://h/etc"}},
		"endpoint complete": {Complete: []string{"tls://x:1"}},
		"bad scan id":       {ScanID: "a b"},
		"bad host":          {Host: "spiffe://example.org/x"},
		"too many":          {Sightings: make([]authority.ReportedSighting, authority.MaxReportSightings+1)},
	} {
		r.Sightings = append(r.Sightings, authority.ReportedSighting{Location: "tls://10.9.9.9:443", Chain: chainDER(other.Cert)})
		if _, err := f.Authority.ReportDiscovery(ctx, f.Admin, r); authority.KindOf(err) != authority.KindInvalid {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	if after := len(discoveredEvents()); after != before {
		t.Errorf("refused reports recorded %d events", after-before)
	}
	if l, _ := f.Authority.DiscoveredCertificates(ctx, f.Admin, store.DiscoveryFilter{IncludeGone: true}); len(l) != 6 {
		t.Errorf("refused reports changed the inventory: %d certificates", len(l))
	}
	if _, err := f.Authority.DiscoveredCertificates(ctx, f.Admin, store.DiscoveryFilter{Finding: "bogus"}); authority.KindOf(err) != authority.KindInvalid {
		t.Errorf("an unknown finding: %v", err)
	}
}

// TestNoticeExpiring: a certificate that nothing renewed in time is
// announced once; a renewed one never is.
func TestNoticeExpiring(t *testing.T) {
	f, clk := discoveryFixture(t, nil)
	ctx := context.Background()
	forgotten := f.Issue(t, "spiffe://example.org/billing/forgotten")
	renewed := f.Issue(t, "spiffe://example.org/billing/renewed")
	clk.advance(40 * time.Minute)
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: f.Principal(t, renewed), CSR: authoritytest.CSR(t)}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Authority.NoticeExpiring(ctx, authority.DefaultExpiryNoticeWindow); err != nil || n != 0 {
		t.Fatalf("with two thirds of the life left: %d notices, %v", n, err)
	}
	clk.advance(10 * time.Minute)
	n, err := f.Authority.NoticeExpiring(ctx, authority.DefaultExpiryNoticeWindow)
	if err != nil || n != 1 {
		t.Fatalf("%d notices, %v; want the forgotten certificate's", n, err)
	}
	evs, _ := f.Store.Events(ctx, store.EventFilter{Action: store.ActionCertExpiring})
	if len(evs) != 1 || evs[0].Serial != forgotten.Record.Serial || evs[0].Actor != authority.SystemPrincipal || !strings.Contains(evs[0].Detail, "issued by mica") {
		t.Errorf("events %+v", evs)
	}
	if n, _ := f.Authority.NoticeExpiring(ctx, authority.DefaultExpiryNoticeWindow); n != 0 {
		t.Errorf("announced again: %d", n)
	}
}

func mustID(t *testing.T, s string) identity.Identity {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
