package telemetry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// testPolicy has two token profiles besides the fixture's mica-admin.
func testPolicy(t testing.TB) authority.Policy {
	t.Helper()
	eng, err := policy.New(policy.Config{TrustDomain: "example.org", Profiles: map[string]policy.ProfileConfig{
		"service": {SPIFFE: []string{"/billing/*"}, MaxTTL: duration.Duration(24 * time.Hour), DefaultTTL: duration.Duration(time.Hour)},
		"web":     {DNS: []string{"*.svc.example.org"}, MaxTTL: duration.Duration(72 * time.Hour), DefaultTTL: duration.Duration(48 * time.Hour), ExtKeyUsage: []string{"serverAuth", "clientAuth"}},
		"mica-admin": {SPIFFE: []string{"/mica/admin/*"}, ExtKeyUsage: []string{"clientAuth"},
			Rule: `request.method in ["internal", "token", "renew"]`},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

var loopback = netip.MustParseAddr("127.0.0.1")

var testProfiles = []string{"service", "web", "mica-admin"}

// instrumented is a real authority on SQLite with the metrics wired as
// cmd/mica wires them.
type instrumented struct {
	f      *authoritytest.Fixture
	reg    *prometheus.Registry
	server *ServerMetrics
	csrs   [][]byte
}

func newInstrumented(t testing.TB) *instrumented {
	t.Helper()
	reg := NewRegistry("test")
	im, err := NewIssuanceMetrics(reg, testProfiles)
	if err != nil {
		t.Fatal(err)
	}
	in := &instrumented{reg: reg}
	in.f = authoritytest.NewWith(t, func(c *authority.Config) {
		c.Policy, c.Observer, c.AuthFailed = testPolicy(t), im, im.AuthFailed
	})
	if in.server, err = NewServerMetrics(reg, Sources{Inventory: in.f.Store.CertificatesByExpiry, Profiles: testProfiles,
		CAs: func() map[string]*x509.Certificate {
			return map[string]*x509.Certificate{"root": in.f.PKI.Root, "intermediate": in.f.PKI.Intermediate}
		}}); err != nil {
		t.Fatal(err)
	}
	for range 64 {
		in.csrs = append(in.csrs, authoritytest.CSR(t))
	}
	return in
}

// round issues n certificates over two profiles and many identities from
// several goroutines, then renews a few, refuses a few (bad token,
// identity mismatch, TTL too long, an unknown profile's token is not even
// mintable) and revokes one: every kind of label the series could take.
func (in *instrumented) round(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var issued sync.Map
	for w := range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id, profile := fmt.Sprintf("spiffe://example.org/billing/svc-%d", i%97), "service"
				if i%3 == 0 {
					id, profile = fmt.Sprintf("host-%d.svc.example.org", i%89), "web"
				}
				tok, err := in.f.Authority.CreateToken(ctx, in.f.Admin, authority.TokenRequest{Identity: id, Profile: profile})
				if err != nil {
					t.Error(err)
					return
				}
				iss, err := in.f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok.Raw, CSR: in.csrs[(w*31+i)%len(in.csrs)]})
				if err != nil {
					t.Error(err)
					return
				}
				if i < 8 {
					issued.Store(i, iss)
				}
			}
		})
	}
	wg.Wait()
	for i := range 6 {
		v, _ := issued.Load(i)
		iss := v.(*authority.Issued)
		p, err := in.f.Authority.AuthenticateFrom(ctx, []*x509.Certificate{iss.Certificate, iss.Chain[0]}, loopback)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, CSR: in.csrs[i]}); err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			if _, err := in.f.Authority.Revoke(ctx, in.f.Admin, iss.Record.Serial, 1, loopback); err != nil {
				t.Fatal(err)
			}
			// A revoked certificate cannot authenticate: an auth failure.
			if _, err := in.f.Authority.AuthenticateFrom(ctx, []*x509.Certificate{iss.Certificate, iss.Chain[0]}, loopback); err == nil {
				t.Fatal("a revoked certificate authenticated")
			}
		}
	}
	tok := in.f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/x", Profile: "service"})
	refusals := []authority.EnrollRequest{
		{Token: "not-a-token", CSR: in.csrs[0]},
		{Token: tok, CSR: authoritytest.CSR(t, "spiffe://example.org/billing/y")},
		{Token: tok, CSR: in.csrs[0], TTL: 1000 * time.Hour},
	}
	for _, r := range refusals {
		if _, err := in.f.Authority.Enroll(ctx, r); err == nil {
			t.Fatal("a bad enrollment was accepted")
		}
	}
}

// series counts the samples a scrape would return, and fails on any label
// value that looks like one certificate's (a serial, a fingerprint, an
// identity or a DNS name).
func series(t testing.TB, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hexRun := regexp.MustCompile(`[0-9a-f]{12,}`)
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n++
			if h := m.GetHistogram(); h != nil {
				n += len(h.GetBucket()) + 1 // _bucket…, _sum and _count lines
			}
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if strings.Contains(v, "://") || strings.Contains(v, ".example.org") || hexRun.MatchString(v) || len(v) > 40 {
					t.Errorf("%s{%s=%q}: a label value that names one certificate or identity", mf.GetName(), lp.GetName(), v)
				}
			}
		}
	}
	return n
}

// TestCardinalityFlat is the must-show: the number of series does not grow
// with the number of certificates.
func TestCardinalityFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("issues 10,000 certificates")
	}
	in := newInstrumented(t)
	in.round(t, 100)
	after100 := series(t, in.reg)
	in.round(t, 9900)
	after10k := series(t, in.reg)
	scrape := scrapeText(t, in.reg)
	issued := scrape[`mica_issuance_requests_total{door="token",outcome="issued",profile="service"}`] +
		scrape[`mica_issuance_requests_total{door="token",outcome="issued",profile="web"}`]
	t.Logf("series after 100 certificates: %d; after 10,000: %d (%v enrolled)", after100, after10k, issued)
	if issued != 10000 {
		t.Errorf("mica_issuance_requests_total counted %v token enrollments, want 10000", issued)
	}
	if after100 != after10k {
		t.Errorf("series grew from %d to %d with the number of certificates", after100, after10k)
	}
}

func TestIssuanceMetrics(t *testing.T) {
	in := newInstrumented(t)
	in.round(t, 30)
	want := map[string]float64{
		`mica_issuance_requests_total{door="token",outcome="issued",profile="service"}`:           20,
		`mica_issuance_requests_total{door="token",outcome="issued",profile="web"}`:               10,
		`mica_issuance_requests_total{door="renew",outcome="issued",profile="web"}`:               2,
		`mica_issuance_requests_total{door="renew",outcome="issued",profile="service"}`:           4,
		`mica_issuance_requests_total{door="internal",outcome="issued",profile="mica-admin"}`:     3, // the fixture's admin, operator and auditor
		`mica_issuance_refusals_total{door="token",profile="none",reason="token-invalid"}`:        1,
		`mica_issuance_refusals_total{door="token",profile="service",reason="identity-mismatch"}`: 1,
		`mica_issuance_refusals_total{door="token",profile="service",reason="ttl-too-long"}`:      1,
		`mica_issuance_duration_seconds_count{door="token",outcome="issued",profile="service"}`:   20,
		`mica_revocations_total{reason="keyCompromise"}`:                                          1,
		`mica_revocations_total{reason="superseded"}`:                                             0,
		`mica_authentication_failures_total{reason="token-invalid"}`:                              1,
		`mica_authentication_failures_total{reason="certificate-revoked"}`:                        1,
		`mica_live_certificates{expires_within="1h",profile="service"}`:                           23, // 20 + 4 renewed − 1 revoked
		`mica_live_certificates{expires_within="7d",profile="web"}`:                               12,
		`mica_live_certificates{expires_within="more",profile="mica-admin"}`:                      0,
		`mica_live_certificates{expires_within="1h",profile="other"}`:                             0,
	}
	scrape := scrapeText(t, in.reg)
	for sample, v := range want {
		if got, ok := scrape[sample]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", sample, got, ok, v)
		}
	}
	// The fixture's admin, operator and auditor certificates are 24h
	// mica-admin ones here.
	if got := scrape[`mica_live_certificates{expires_within="24h",profile="mica-admin"}`]; got != 3 {
		t.Errorf("mica-admin in 24h = %v, want 3", got)
	}
}

// scrapeText serves reg over HTTP and reads the text format back, the way
// Prometheus does: sample (with labels) → value.
func scrapeText(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(Handler(reg, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s\n%s", resp.Status, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		fmt.Sscan(line[i+1:], &v)
		out[line[:i]] = v
	}
	return out
}

func TestUnknownProfileIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewIssuanceMetrics(reg, []string{"service"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m.ObserveIssuance(authority.IssuanceResult{Door: policy.MethodACME, Profile: fmt.Sprintf("made-up-%d", i),
			Outcome: authority.OutcomeRefused, Reason: fmt.Sprintf("Reason with spaces %d", i)})
	}
	got := scrapeText(t, reg)
	if v := got[`mica_issuance_refusals_total{door="acme",profile="other",reason="other"}`]; v != 50 {
		t.Errorf("50 refusals under made-up profiles and reasons: counted %v under other/other\n%v", v, got)
	}
}

func TestInventoryQueryIsCached(t *testing.T) {
	var calls atomic.Int32
	fail := false
	reg := prometheus.NewRegistry()
	if _, err := NewServerMetrics(reg, Sources{Profiles: []string{"service"}, InventoryEvery: time.Hour,
		Inventory: func(context.Context, time.Time) ([]store.ExpiryCount, error) {
			calls.Add(1)
			if fail {
				return nil, errors.New("database on fire")
			}
			return []store.ExpiryCount{{Profile: "service", Window: store.Within1h, Count: 3}, {Profile: "gone", Window: store.Later, Count: 2}}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		got := scrapeText(t, reg)
		if got[`mica_live_certificates{expires_within="1h",profile="service"}`] != 3 || got[`mica_live_certificates{expires_within="more",profile="other"}`] != 2 {
			t.Fatalf("inventory gauges: %v", got)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("5 scrapes ran the inventory query %d times, want once per interval", n)
	}
	// A failing query is reported, not served as zeros.
	fail = true
	reg2 := prometheus.NewRegistry()
	NewServerMetrics(reg2, Sources{Profiles: []string{"service"}, Inventory: func(context.Context, time.Time) ([]store.ExpiryCount, error) {
		return nil, errors.New("database on fire")
	}})
	if _, err := reg2.Gather(); err == nil || !strings.Contains(err.Error(), "database on fire") {
		t.Errorf("a failing inventory query gathered without error: %v", err)
	}
}

// Once the inventory has been counted, a scrape never waits for the count:
// a stale answer starts a new count in the background and is served
// meanwhile, and a scrape after the count ends gets the new one.
func TestScrapeDoesNotWaitForTheInventory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		reg := prometheus.NewRegistry()
		if _, err := NewServerMetrics(reg, Sources{Profiles: []string{"service"}, InventoryEvery: time.Minute,
			Inventory: func(context.Context, time.Time) ([]store.ExpiryCount, error) {
				if calls.Add(1) > 1 {
					<-release // a slow count
				}
				return []store.ExpiryCount{{Profile: "service", Window: store.Within1h, Count: calls.Load()}}, nil
			}}); err != nil {
			t.Fatal(err)
		}
		const gauge = `mica_live_certificates{expires_within="1h",profile="service"}`
		if got := scrapeText(t, reg)[gauge]; got != 1 {
			t.Fatalf("first scrape: %v, want the first count (1)", got)
		}
		time.Sleep(2 * time.Minute) // the answer is stale now
		done := make(chan struct{})
		go func() { reg.Gather(); close(done) }()
		synctest.Wait()
		select {
		case <-done:
		default:
			close(release)
			t.Fatal("a scrape waited for the inventory count")
		}
		if got := scrapeText(t, reg)[gauge]; got != 1 {
			t.Errorf("scrape during a slow count: %v, want the last count (1)", got)
		}
		close(release)
		synctest.Wait()
		if got := scrapeText(t, reg)[gauge]; got != 2 {
			t.Errorf("scrape after the background count: %v, want its answer (2)", got)
		}
	})
}

func TestServerGauges(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	if _, err := NewServerMetrics(reg, Sources{Clock: func() time.Time { return now },
		CRL: func() (time.Time, time.Time, int, bool) { return now.Add(-time.Hour), now.Add(23 * time.Hour), 7, true },
		CAs: func() map[string]*x509.Certificate {
			return map[string]*x509.Certificate{"root": {NotAfter: now.Add(10 * 24 * time.Hour)}}
		},
	}); err != nil {
		t.Fatal(err)
	}
	fm, err := NewFeedMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	fm.Delivered(3 * time.Millisecond)
	got := scrapeText(t, reg)
	for s, v := range map[string]float64{
		"mica_crl_age_seconds": 3600, "mica_crl_next_update_seconds": 23 * 3600, "mica_crl_entries": 7,
		`mica_ca_certificate_expiry_seconds{ca="root"}`: 10 * 24 * 3600, "mica_feed_delivery_seconds_count": 1,
	} {
		if got[s] != v {
			t.Errorf("%s = %v, want %v", s, got[s], v)
		}
	}
	if _, ok := got["mica_ocsp_cached_responses"]; ok {
		t.Error("a source that is not wired produced a metric")
	}
}

// TestOCSPGauges: the response cache's size, bound and evictions are
// exported as the cache reports them.
func TestOCSPGauges(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	if _, err := NewServerMetrics(reg, Sources{Clock: func() time.Time { return now },
		OCSP: func() ocsp.CacheStats {
			return ocsp.CacheStats{Responses: 17, Bytes: 32_000, MaxBytes: 32 << 20, Evicted: 5, Oldest: now.Add(-10 * time.Minute)}
		},
	}); err != nil {
		t.Fatal(err)
	}
	got := scrapeText(t, reg)
	for s, v := range map[string]float64{
		"mica_ocsp_cached_responses": 17, "mica_ocsp_oldest_response_age_seconds": 600,
		"mica_ocsp_cache_bytes": 32_000, "mica_ocsp_cache_limit_bytes": 32 << 20, "mica_ocsp_cache_evictions_total": 5,
	} {
		if got[s] != v {
			t.Errorf("%s = %v, want %v", s, got[s], v)
		}
	}
}

func TestTracingOffRecordsNothing(t *testing.T) {
	tr, err := NewTracing(context.Background(), TracingConfig{}, "mica", "test")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("tracing is on with no endpoint")
	}
	// A recording parent from elsewhere: the authority's spans would be
	// its children if it recorded any.
	exp := tracetest.NewInMemoryExporter()
	outer := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	f := authoritytest.NewWith(t, func(c *authority.Config) { c.Tracer = tr.Tracer("mica") })
	ctx, parent := outer.Tracer("caller").Start(context.Background(), "caller")
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"})
	if _, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t)}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Name != "caller" {
		t.Errorf("with tracing off, spans recorded: %v", spans.Snapshots())
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestTracingExportsOTLP runs the real OTLP/HTTP exporter against a
// receiver that decodes what it is sent.
func TestTracingExportsOTLP(t *testing.T) {
	var mu sync.Mutex
	var names []string
	var service string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer recv.Close()
	tr, err := NewTracing(context.Background(), TracingConfig{OTLPEndpoint: recv.URL, SampleRatio: 1}, "mica", "test")
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off with an endpoint")
	}
	f := authoritytest.NewWith(t, func(c *authority.Config) { c.Tracer = tr.Tracer("mica") })
	f.Issue(t, "spiffe://example.org/billing/a")
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(names, ",")
	for _, want := range []string{"authority.Enroll", "authority.authenticate", "policy.decide", "issuance.lint", "issuance.sign", "store.commit", "authority.IssueInternal"} {
		if !strings.Contains(joined, want) {
			t.Errorf("exported spans %v lack %s", names, want)
		}
	}
	if service != "mica" {
		t.Errorf("service.name = %q, want mica", service)
	}
}

func TestTracingConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg TracingConfig
		ok  bool
	}{
		{TracingConfig{}, true},
		{TracingConfig{OTLPEndpoint: "collector:4318", SampleRatio: 0.1}, true},
		{TracingConfig{OTLPEndpoint: "https://collector.example.org:4318"}, true},
		{TracingConfig{SampleRatio: 1.5}, false},
		{TracingConfig{OTLPEndpoint: "ftp://collector"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.cfg, err)
		}
	}
}
