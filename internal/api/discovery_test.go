package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/store"
)

// TestDiscoveryOverHTTPS reports a scan over mTLS, lists what was found,
// reads the expiry report's discovered part and the webhook state.
func TestDiscoveryOverHTTPS(t *testing.T) {
	f := authoritytest.New(t)
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org",
		Webhooks: []api.WebhookEndpoint{{Name: "cmdb", URL: "https://cmdb.example.org/hook", Types: []string{"cert.*"}}}}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	as := func(c authoritytest.Cred) *client.Client {
		cl, err := client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: c.TLS()})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	operator, auditor := as(f.OperatorCred), as(f.AuditorCred)
	workload := as(f.EnrollCred(t, "service", "spiffe://example.org/billing/api"))
	ctx := context.Background()

	soon := discovertest.Issue(t, nil, discovertest.Spec{CN: "soon.test", DNS: []string{"soon.test"},
		NotBefore: time.Now().Add(-80 * 24 * time.Hour), NotAfter: time.Now().Add(5 * 24 * time.Hour)})
	report := client.DiscoveryReport{ScanID: "s1", Sightings: []client.DiscoverySighting{
		{Location: "tls://soon.test:443", Chain: [][]byte{soon.Cert.Raw}, Address: "192.0.2.1", TLSVersion: tls.VersionTLS13},
	}, Scanned: []string{"tls://soon.test:443"}}
	if _, err := workload.ReportDiscovery(ctx, report); problemSlug(err) != "forbidden" {
		t.Errorf("a workload reported: %v", err)
	}
	sum, err := operator.ReportDiscovery(ctx, report)
	if err != nil || sum.New != 1 || sum.Findings["self-signed"] != 1 {
		t.Fatalf("report: %+v, %v", sum, err)
	}
	report.Sightings[0].Location = "tls://soon.test"
	if _, err := operator.ReportDiscovery(ctx, report); problemSlug(err) != "invalid-request" {
		t.Errorf("a bad location: %v", err)
	}

	list, err := auditor.DiscoveredCertificates(ctx, client.DiscoveredFilter{Sightings: true, WithPEM: true, Class: "self-signed"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	c := list[0]
	if c.Identity != "soon.test" || c.Class != "self-signed" || len(c.Sightings) != 1 || c.Sightings[0].Reporter != authoritytest.OperatorID ||
		!strings.Contains(c.Sightings[0].Detail, "TLS 1.3") || !strings.Contains(c.PEM, "BEGIN CERTIFICATE") {
		t.Errorf("listed %+v", c)
	}
	if l, err := auditor.DiscoveredCertificates(ctx, client.DiscoveredFilter{Finding: "expired"}); err != nil || len(l) != 0 {
		t.Errorf("expired ones: %d, %v", len(l), err)
	}
	if _, err := auditor.DiscoveredCertificates(ctx, client.DiscoveredFilter{Class: "alien"}); problemSlug(err) != "invalid-request" {
		t.Errorf("a bad class: %v", err)
	}
	if _, err := workload.DiscoveredCertificates(ctx, client.DiscoveredFilter{}); problemSlug(err) != "forbidden" {
		t.Errorf("a workload listed: %v", err)
	}

	rep, err := auditor.ExpiringReport(ctx, client.ExpiringQuery{Within: "30d"})
	if err != nil || rep.Discovered == nil || rep.Discovered.Total != 1 || rep.Discovered.Groups[0].Certificates[0].Identity != "soon.test" {
		t.Errorf("expiry report's discovered part: %+v, %v", rep.Discovered, err)
	}

	if err := f.Store.(store.WebhookStore).AddDeadLetter(ctx, store.DeadLetter{Endpoint: "gone-endpoint", Seq: 3, Error: "answered 400", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Store.(store.WebhookStore).InitWebhook(ctx, "gone-endpoint", 1); err != nil {
		t.Fatal(err)
	}
	hooks, err := auditor.Webhooks(ctx, 5)
	if err != nil || len(hooks) != 2 {
		t.Fatalf("webhooks: %+v, %v", hooks, err)
	}
	if h := hooks[0]; h.Name != "cmdb" || !h.Configured || h.URL != "https://cmdb.example.org/hook" {
		t.Errorf("configured endpoint %+v", h)
	}
	if h := hooks[1]; h.Name != "gone-endpoint" || h.Configured || h.DeadLetters != 1 || len(h.Dead) != 1 || h.Lag != h.LastSeq-1 {
		t.Errorf("remembered endpoint %+v", h)
	}
	if _, err := workload.Webhooks(ctx, 0); problemSlug(err) != "forbidden" {
		t.Errorf("a workload read webhook state: %v", err)
	}
}
