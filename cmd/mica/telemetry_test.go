package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mica-pki/mica/revocation"
)

// scrapedNames reads a /metrics endpoint and returns the sample names.
func scrapedNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s\n%s", url, resp.Status, body)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		names[line[:strings.IndexAny(line, "{ ")]] = true
	}
	return names
}

// metricRef finds metric names in a PromQL expression; up is Prometheus's
// own and needs no exporter.
var metricRef = regexp.MustCompile(`\b(?:mica|go|process)_[a-z0-9_]+\b`)

// shippedQueries are the expressions of deploy/prometheus/alerts.yml and of
// every panel of deploy/grafana/mica-dashboard.json, which are also checked
// for their shape here: every panel has the datasource variable and a query.
func shippedQueries(t *testing.T) map[string]string {
	t.Helper()
	queries := map[string]string{}
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.Annotations["runbook"] == "" {
				t.Errorf("alert %s needs a severity label and summary, description and runbook annotations", r.Alert)
			}
			queries["alert "+r.Alert] = r.Expr
		}
	}

	data, err = os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "mica-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type datasource struct{ Type, UID string }
	var dash struct {
		SchemaVersion int
		Templating    struct {
			List []struct{ Name, Type, Query string }
		}
		Panels []struct {
			Type, Title string
			Datasource  *datasource
			Targets     []struct {
				Expr       string
				Datasource *datasource
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("mica-dashboard.json does not parse: %v", err)
	}
	if dash.SchemaVersion < 36 || !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("dashboard: schemaVersion %d and a Prometheus datasource variable named datasource are required", dash.SchemaVersion)
	}
	rows := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			rows++
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: needs the ${datasource} datasource and at least one query", p.Title)
		}
		for i, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.Datasource == nil || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %d: empty, or not on the ${datasource} datasource", p.Title, i)
			}
			queries["panel "+p.Title+" #"+string(rune('A'+i))] = q.Expr
		}
	}
	if rows != 3 {
		t.Errorf("dashboard has %d rows, want executive, on-call and debug", rows)
	}
	return queries
}

// TestShippedQueriesMatchMetrics starts the real server, an agent and a
// proxy, makes them do each thing the dashboard and alerts count (enroll,
// renew, refuse, fail an authentication, revoke, deliver to a feed
// subscriber, proxy a request over mTLS), scrapes all three, and checks
// that every metric the alerts and the dashboard query is exported under
// that name.
func TestShippedQueriesMatchMetrics(t *testing.T) {
	queries := shippedQueries(t)
	e := newTestEnv(t, "sqlite")
	if e.server.metricsURL == "" {
		t.Fatal("mica serve did not say where its metrics are")
	}
	ag := e.startAgent("spiffe://example.org/billing/agent", "1h")

	dir := e.issue("spiffe://example.org/billing/api", "service")
	e.micaOK("cert", "renew", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile))
	if r := e.mica("cert", "issue", "--token", "not-a-token", "--out", t.TempDir()); r.code == 0 {
		t.Fatal("a bad token enrolled")
	}
	cred, err := tls.LoadX509KeyPair(filepath.Join(e.dataDir, "admin", fullchainFile), filepath.Join(e.dataDir, "admin", keyFile))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := revocation.NewSubscriber(revocation.Config{URL: e.server.url + "/v1/revocations/feed",
		TLS: &tls.Config{RootCAs: e.roots, Certificates: []tls.Certificate{cred}, MinVersion: tls.VersionTLS13}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sub.Run(ctx)
	waitFor(t, "the feed subscriber", 30*time.Second, func() bool {
		return scrapedValue(t, e.server.metricsURL, "mica_feed_subscribers") == 1
	})
	serial := readLeaf(t, dir).SerialNumber.Text(16)
	e.micaOK("cert", "revoke", serial, "--reason", "keyCompromise")
	waitFor(t, "the revocation to reach the subscriber", 30*time.Second, func() bool { return sub.Set().Revoked(serial) })
	waitFor(t, "a signed audit checkpoint", 30*time.Second, func() bool {
		return scrapedValue(t, e.server.metricsURL, "mica_audit_checkpoint_leaves") > 0
	})

	// The proxy exports the mtls handshake and proxied request metrics.
	const gatewayID, workerID = "spiffe://example.org/gateway/billing", "spiffe://example.org/billing/worker"
	gateway := e.issue(gatewayID+",billing.svc.example.org", "gateway")
	workerDir := e.issue(workerID, "service")
	worker, err := tls.LoadX509KeyPair(filepath.Join(workerDir, fullchainFile), filepath.Join(workerDir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	backend := newHeaderRecorder(t)
	gw := startProxy(t, gatewayConfig(gateway, e.server.url, "127.0.0.1:0", backend.URL, workerID))
	listen := gw.listeners["billing"]
	viaProxy := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots,
		Certificates: []tls.Certificate{worker}, ServerName: "billing.svc.example.org", MinVersion: tls.VersionTLS13}}}
	resp, err := viaProxy.Get("https://" + listen + "/invoices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("through the proxy: %s", resp.Status)
	}

	// The root CRL, signed at the root ceremony, is watched once published.
	e.micaOK("ca", "root-crl", "--validity", "720h")

	have := scrapedNames(t, e.server.metricsURL)
	for _, url := range []string{"http://" + ag.metrics + "/metrics", "http://" + gw.metrics + "/metrics"} {
		for n := range scrapedNames(t, url) {
			have[n] = true
		}
	}
	for where, q := range queries {
		for _, name := range metricRef.FindAllString(q, -1) {
			if !have[name] {
				t.Errorf("%s queries %s, which none of the server, the agent and the proxy exports", where, name)
			}
		}
	}
	for _, want := range []string{
		`mica_issuance_requests_total{door="token",outcome="issued",profile="service"}`,
		`mica_issuance_requests_total{door="renew",outcome="issued",profile="service"}`,
		`mica_issuance_refusals_total{door="token",profile="none",reason="token-invalid"}`,
		`mica_revocations_total{reason="keyCompromise"}`,
		`mica_feed_delivery_seconds_count`,
	} {
		if v := scrapedValue(t, e.server.metricsURL, want); v < 1 {
			t.Errorf("%s = %v after the requests above, want at least 1", want, v)
		}
	}
}

// scrapedValue reads one sample (name with its labels, as exposed), -1
// when absent.
func scrapedValue(t *testing.T, url, sample string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

func TestTelemetryConfig(t *testing.T) {
	base := "trust_domain: example.org\nprofiles:\n  service: {spiffe: [\"/**\"]}\n"
	tests := []struct {
		name, yaml, metrics, err string
		tracing                  bool
	}{
		{"Defaults", "", defaultMetrics, "", false},
		{"MetricsOff", "metrics_listen: \"off\"\n", "off", "", false},
		{"MetricsEmptyIsOff", "metrics_listen: \"\"\n", "", "", false},
		{"MetricsElsewhere", "metrics_listen: 0.0.0.0:9999\n", "0.0.0.0:9999", "", false},
		{"Tracing", "tracing: {otlp_endpoint: \"http://127.0.0.1:4318\", sample_ratio: 0.25}\n", defaultMetrics, "", true},
		{"BadRatio", "tracing: {otlp_endpoint: collector:4318, sample_ratio: 2}\n", "", "sample_ratio", false},
		{"BadEndpoint", "tracing: {otlp_endpoint: \"ftp://collector\"}\n", "", "otlp_endpoint", false},
		{"UnknownField", "tracing: {endpoint: collector:4318}\n", "", "endpoint", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig([]byte(base+tc.yaml), "mica.yaml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.metricsListen(""); got != tc.metrics {
				t.Errorf("metrics listen = %q, want %q", got, tc.metrics)
			}
			if got := cfg.metricsListen("127.0.0.1:0"); got != "127.0.0.1:0" {
				t.Errorf("the flag did not win: %q", got)
			}
			if on := cfg.Tracing.OTLPEndpoint != ""; on != tc.tracing {
				t.Errorf("tracing on = %v, want %v", on, tc.tracing)
			}
		})
	}
}

// otlpSpan is one span as an OTLP receiver got it.
type otlpSpan struct {
	name          string
	trace, parent string
	id            string
	attrs         map[string]string
}

// otlpReceiver decodes OTLP/HTTP trace exports, as a collector would.
func otlpReceiver(t *testing.T) (url string, spans func() []otlpSpan) {
	t.Helper()
	var mu sync.Mutex
	var got []otlpSpan
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					sp := otlpSpan{name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()),
						parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{}}
					for _, kv := range s.GetAttributes() {
						sp.attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
					}
					got = append(got, sp)
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []otlpSpan {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestServeTracing runs the real server with tracing on, exporting to a
// receiver in this test: an enrollment over HTTPS is one trace, the HTTP
// server span the parent of the authority's request span and that the
// parent of the pipeline's steps, and no span carries the token.
func TestServeTracing(t *testing.T) {
	url, spans := otlpReceiver(t)
	e := newTestEnvWith(t, "sqlite", "tracing:\n  otlp_endpoint: "+url+"\n  sample_ratio: 1\n")
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", "spiffe://example.org/billing/traced", "--profile", "service"))
	e.micaOK("cert", "issue", "--token", tok, "--out", t.TempDir())
	var enroll otlpSpan
	waitFor(t, "the enrollment's spans at the receiver", 30*time.Second, func() bool {
		for _, s := range spans() {
			if s.name == "authority.Enroll" {
				enroll = s
			}
		}
		return enroll.id != "" && len(spans()) > 0
	})
	// Spans are exported in batches; give the rest of this trace a moment.
	var children []string
	waitFor(t, "the pipeline's steps", 30*time.Second, func() bool {
		children = nil
		for _, s := range spans() {
			if s.parent == enroll.id {
				children = append(children, s.name)
			}
		}
		return len(children) == 5
	})
	slices.Sort(children)
	if want := []string{"authority.authenticate", "issuance.lint", "issuance.sign", "policy.decide", "store.commit"}; !slices.Equal(children, want) {
		t.Errorf("children of authority.Enroll = %v, want %v", children, want)
	}
	// The HTTP span ends after the response is written, so it may come in
	// a later batch.
	waitFor(t, "the HTTP server span", 30*time.Second, func() bool {
		return slices.ContainsFunc(spans(), func(s otlpSpan) bool { return s.id == enroll.parent })
	})
	var httpParent bool
	for _, s := range spans() {
		if s.id == enroll.parent && s.trace == enroll.trace && s.name == "POST /v1/certificates" {
			httpParent = true
		}
		for k, v := range s.attrs {
			if strings.Contains(v, tok) || strings.Contains(v, tok[:20]) {
				t.Errorf("span %s attribute %s carries the token", s.name, k)
			}
		}
	}
	if !httpParent {
		t.Errorf("authority.Enroll's parent is not the HTTP server span of its request (POST /v1/certificates)")
	}
	if enroll.attrs["mica.outcome"] != "issued" || enroll.attrs["mica.door"] != "token" || enroll.attrs["mica.profile"] != "service" {
		t.Errorf("authority.Enroll attributes %v", enroll.attrs)
	}
}
