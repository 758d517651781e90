package limits_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// The config of the end-to-end test: the service profile expects requests
// from 10.0.0.0/8 only (the test's requests come from 127.0.0.1), allows
// eight requests per source an hour, and refuses renewal storms of more
// than three renewals in a lifetime.
const (
	e2eLimits    = "per_source: {rate: 8/h}"
	e2eAnomalies = "profiles: {service: {renewal_storm: {action: refuse, max_renewals_per_lifetime: 3}}}"
)

// TestStormAndBurstOverHTTPS drives a renewal storm and then a burst of
// enrollments from an unexpected network through the real HTTPS API, with
// a real authority and store, and checks each refusal's status, problem
// type and Retry-After, the metrics in the registry, and the audit events
// (leaves of the audit log) in the store. Then a certificate from another
// CA is presented and reported as an unexpected issuer.
func TestStormAndBurstOverHTTPS(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	var guard *limits.Guard
	f := authoritytest.NewWith(t, func(cfg *authority.Config) {
		pc := authoritytest.PolicyConfig()
		svc := pc.Profiles["service"]
		svc.ExpectedNetworks = []string{"10.0.0.0/8"}
		pc.Profiles["service"] = svc
		eng, err := policy.New(pc)
		if err != nil {
			t.Fatal(err)
		}
		var l limits.Limits
		var a limits.Anomalies
		if err := errors.Join(yaml.Unmarshal([]byte(e2eLimits), &l), yaml.Unmarshal([]byte(e2eAnomalies), &a)); err != nil {
			t.Fatal(err)
		}
		rules, err := limits.Compile(l, a, []string{"service", "mica-admin"})
		if err != nil {
			t.Fatal(err)
		}
		if guard, err = limits.New(limits.Config{Rules: rules, Recorder: cfg.Store, Registerer: reg}); err != nil {
			t.Fatal(err)
		}
		cfg.Policy, cfg.Guard = eng, guard
	})
	srv, anon, admin := serveAPI(t, f)
	metric := func(name string, labels map[string]string) float64 { return counter(t, reg, name, labels) }

	// 1. A workload enrolls (from 127.0.0.1: outside the expected
	// networks, so an alert but no refusal), then renews in a loop.
	id := "spiffe://example.org/billing/api"
	workload := enroll(t, f, srv, anon, admin, id)
	var storm *client.Problem
	renewals := 0
	for storm == nil && renewals < 10 {
		_, err := workload.Renew(ctx, client.CertificateRequest{CSR: csrPEM(t)})
		if err != nil && !errors.As(err, &storm) {
			t.Fatalf("renewal %d: %v", renewals+1, err)
		}
		renewals++
	}
	if storm == nil || renewals != 4 {
		t.Fatalf("renewals until refused = %d (problem %v), want the 4th refused", renewals, storm)
	}
	if storm.Status != 429 || storm.Slug() != limits.ReasonRenewalStorm || storm.RetryAfter <= 0 || storm.RetryAfter > time.Hour {
		t.Fatalf("storm refusal: status %d, slug %q, Retry-After %v; want 429 renewal-storm within the hour", storm.Status, storm.Slug(), storm.RetryAfter)
	}
	if n := metric("mica_anomalies_total", map[string]string{"kind": "renewal_storm", "profile": "service", "action": "refuse"}); n != 1 {
		t.Errorf("mica_anomalies_total{renewal_storm,service,refuse} = %v, want 1", n)
	}
	stormEvents := auditEvents(t, f, store.ActionAnomalyRenewalStorm)
	if len(stormEvents) != 1 || stormEvents[0].Identity != id || stormEvents[0].Outcome != "refused" || stormEvents[0].Actor != id {
		t.Fatalf("anomaly.renewal_storm events = %+v", stormEvents)
	}

	// 2. A burst of enrollments from the same unexpected source runs into
	// the per-source limit: 8 an hour, 5 already spent above (the refused
	// renewal counted too).
	var limited *client.Problem
	enrolled := 0
	for i := 0; limited == nil && i < 10; i++ {
		tok, err := admin.CreateToken(ctx, client.TokenRequest{Identity: fmt.Sprint("spiffe://example.org/billing/w", i), Profile: "service"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.Enroll(ctx, tok.Token, client.CertificateRequest{CSR: csrPEM(t)}); err != nil {
			if !errors.As(err, &limited) {
				t.Fatalf("enrollment %d: %v", i+1, err)
			}
			continue
		}
		enrolled++
	}
	if limited == nil || enrolled != 3 {
		t.Fatalf("enrolled %d before refusal %v; want 3", enrolled, limited)
	}
	if limited.Status != 429 || limited.Type != "urn:mica:problem:rate-limited" || limited.RetryAfter < 7*time.Minute || limited.RetryAfter > 8*time.Minute {
		t.Fatalf("burst refusal: status %d, type %q, Retry-After %v; want 429 rate-limited, about 7.5 minutes (8/h)", limited.Status, limited.Type, limited.RetryAfter)
	}
	if !strings.Contains(limited.Detail, "source 127.0.0.1") {
		t.Errorf("refusal detail %q should name the source", limited.Detail)
	}
	if n := metric("mica_rate_limited_total", map[string]string{"scope": "source", "profile": "service"}); n != 1 {
		t.Errorf("mica_rate_limited_total{source,service} = %v, want 1", n)
	}
	// Every request that reached a decision came from outside 10.0.0.0/8:
	// the enrollment, three renewals and three enrollments.
	if n := metric("mica_anomalies_total", map[string]string{"kind": "unexpected_network", "profile": "service", "action": "alert"}); n != 7 {
		t.Errorf("mica_anomalies_total{unexpected_network,service,alert} = %v, want 7", n)
	}
	if evs := auditEvents(t, f, store.ActionRateLimited); len(evs) != 1 || evs[0].Source != "127.0.0.1" || evs[0].Outcome != "refused" {
		t.Fatalf("rate.limited events = %+v", evs)
	}
	// Throttled: one event at once, the other six in the minute's summary.
	if evs := auditEvents(t, f, store.ActionAnomalyUnexpectedNetwork); len(evs) != 1 || !strings.Contains(evs[0].Detail, "127.0.0.1") {
		t.Fatalf("anomaly.unexpected_network events before the flush = %+v", evs)
	}
	if err := guard.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs := auditEvents(t, f, store.ActionAnomalyUnexpectedNetwork)
	if len(evs) != 2 || !strings.HasPrefix(evs[1].Detail, "6 more since") {
		t.Fatalf("anomaly.unexpected_network events after the flush = %+v", evs)
	}

	// 3. A certificate from another CA, presented to renew.
	rogue := testpki.New(t, "example.org")
	leaf := rogue.Leaf(t, rogue.ID(t, "/billing/api"), testpki.WithExtKeyUsage(x509.ExtKeyUsageClientAuth))
	rc := newClient(t, srv, &tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw, rogue.Intermediate.Raw}, PrivateKey: leaf.Key})
	var p *client.Problem
	if _, err := rc.Renew(ctx, client.CertificateRequest{CSR: csrPEM(t)}); !errors.As(err, &p) || p.Status != 401 {
		t.Fatalf("renewal with a foreign certificate: %v, want 401", err)
	}
	if n := metric("mica_anomalies_total", map[string]string{"kind": "unexpected_issuer", "profile": "unknown", "action": "refuse"}); n != 1 {
		t.Errorf("mica_anomalies_total{unexpected_issuer} = %v, want 1", n)
	}
	issuerEvents := auditEvents(t, f, store.ActionAnomalyUnexpectedIssuer)
	if len(issuerEvents) != 1 || !strings.Contains(issuerEvents[0].Detail, rogue.Intermediate.Subject.String()) ||
		!strings.Contains(issuerEvents[0].Detail, authority.Fingerprint(rogue.Intermediate.Raw)) {
		t.Fatalf("anomaly.unexpected_issuer events = %+v; want the issuer's subject and SHA-256", issuerEvents)
	}
}

// serveAPI runs the API over real TLS 1.3 with client certificates
// requested, as `mica serve` does.
func serveAPI(t *testing.T, f *authoritytest.Fixture) (srv *httptest.Server, anon, admin *client.Client) {
	t.Helper()
	srv = httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cred := tls.Certificate{Certificate: [][]byte{f.AdminIssued.Certificate.Raw, f.PKI.Intermediate.Raw}, PrivateKey: f.AdminKey}
	return srv, newClient(t, srv, nil), newClient(t, srv, &cred)
}

func newClient(t *testing.T, srv *httptest.Server, cred *tls.Certificate) *client.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, err := client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: cred})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// enroll gets id a certificate through the API and returns a client that
// presents it.
func enroll(t *testing.T, f *authoritytest.Fixture, srv *httptest.Server, anon, admin *client.Client, id string) *client.Client {
	t.Helper()
	ctx := context.Background()
	tok, err := admin.CreateToken(ctx, client.TokenRequest{Identity: id, Profile: "service"})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: authoritytest.CSRWithKey(t, key)})
	resp, err := anon.Enroll(ctx, tok.Token, client.CertificateRequest{CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pem.Decode([]byte(resp.Certificate))
	return newClient(t, srv, &tls.Certificate{Certificate: [][]byte{leaf.Bytes, f.PKI.Intermediate.Raw}, PrivateKey: key})
}

func csrPEM(t *testing.T) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: authoritytest.CSR(t)}))
}

// auditEvents reads the events with action from the store and checks that
// each is a leaf of the audit log.
func auditEvents(t *testing.T, f *authoritytest.Fixture, action store.Action) []store.Event {
	t.Helper()
	evs, err := f.Store.Events(context.Background(), store.EventFilter{Action: action})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.LeafIndex < 0 || len(ev.LeafHash) == 0 {
			t.Errorf("event %d (%s) is not a leaf of the audit log", ev.Seq, ev.Action)
		}
	}
	return evs
}
