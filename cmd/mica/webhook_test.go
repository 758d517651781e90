package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/internal/webhook"
)

// hookReceiver is a webhook receiver as a CMDB would run one: it checks
// every delivery's signature (computed here from the Standard Webhooks
// rules, not with mica's code), keeps each event once by its id, and
// answers 503 while down.
type hookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret []byte
	down   atomic.Bool
	delay  time.Duration

	mu         sync.Mutex
	events     map[string]webhook.CloudEvent
	deliveries int
	repeats    int
	bad        []string
}

func newHookReceiver(t *testing.T, secret []byte) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret, events: map[string]webhook.CloudEvent{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.delay > 0 {
		time.Sleep(r.delay) // a slow receiver, on purpose
	}
	if r.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, r.secret)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	r.mu.Lock()
	defer r.mu.Unlock()
	var ce webhook.CloudEvent
	if req.Header.Get("webhook-signature") != want || json.Unmarshal(body, &ce) != nil || ce.ID != id || ce.SpecVersion != "1.0" {
		r.bad = append(r.bad, id)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.deliveries++
	if _, seen := r.events[id]; seen {
		r.repeats++
	}
	r.events[id] = ce
	w.WriteHeader(http.StatusAccepted)
}

func (r *hookReceiver) ids() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for id := range r.events {
		n, _ := strconv.ParseInt(id, 10, 64)
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// auditSeqs are the sequence numbers of every event in the log after seq.
func (e *testEnv) auditSeqs(t *testing.T, after int64) []int64 {
	t.Helper()
	evs, err := e.admin.AuditEvents(context.Background(), client.AuditFilter{AfterSeq: after, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, ev := range evs {
		if ev.Seq > after {
			out = append(out, ev.Seq)
		}
	}
	return out
}

// TestWebhooks: a receiver gets every lifecycle event once (by its id),
// signed, across a receiver outage and a server killed and restarted.
func TestWebhooks(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) { testWebhooks(t, engine) })
	}
}

func testWebhooks(t *testing.T, engine string) {
	secretText := strings.TrimSpace(micaOK(t, nil, "webhook", "secret"))
	secret, err := webhook.ParseSecret(secretText)
	if err != nil {
		t.Fatal(err)
	}
	r := newHookReceiver(t, secret)
	secretFile := filepath.Join(t.TempDir(), "cmdb.secret")
	if err := os.WriteFile(secretFile, []byte(secretText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newTestEnvWith(t, engine, fmt.Sprintf(`webhooks:
  - name: cmdb
    url: %s/hook?token=not-shown
    secret_file: %s
`, r.srv.URL, secretFile))
	status := func() client.WebhookStatus {
		t.Helper()
		var hooks []client.WebhookStatus
		if err := json.Unmarshal([]byte(e.micaOK("webhook", "status", "--output", "json")), &hooks); err != nil || len(hooks) != 1 {
			t.Fatalf("webhook status: %v %+v", err, hooks)
		}
		return hooks[0]
	}
	var start int64
	waitFor(t, "the endpoint to start at the end of the log", 60*time.Second, func() bool {
		st := status()
		start = st.Cursor
		return st.Cursor > 0
	})
	if st := status(); st.URL != r.srv.URL+"/hook" || !st.Configured {
		t.Errorf("status %+v: the URL is shown without its query", st)
	}

	// Lifecycle events of every kind: issued, renewed, revoked, refused,
	// denied, discovered.
	ctx := context.Background()
	a := e.issue("spiffe://example.org/billing/a", "service")
	e.micaOK("cert", "renew", "--cert", filepath.Join(a, certFile), "--key", filepath.Join(a, keyFile))
	b := e.issue("spiffe://example.org/billing/b", "service")
	e.micaOK("cert", "revoke", readLeaf(t, b).SerialNumber.Text(16))
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", "spiffe://example.org/billing/c", "--profile", "service"))
	e.micaOK("cert", "issue", "--token", tok, "--out", filepath.Join(t.TempDir(), "c"))
	if r := e.mica("cert", "issue", "--token", tok, "--out", filepath.Join(t.TempDir(), "c2")); r.code == 0 {
		t.Fatal("a token was used twice")
	}
	e.micaOK("identity", "deny", "spiffe://example.org/billing/d")
	if _, err := e.admin.ReportDiscovery(ctx, client.DiscoveryReport{ScanID: "w1", Sightings: []client.DiscoverySighting{
		{Location: "tls://192.0.2.1:443", Chain: [][]byte{readLeaf(t, a).Raw}}}}); err != nil {
		t.Fatal(err)
	}
	first := e.auditSeqs(t, start)
	waitFor(t, "the first events to arrive", 60*time.Second, func() bool { return len(r.ids()) >= len(first) })

	// The receiver goes down; events pile up; the server is killed.
	r.down.Store(true)
	e.issue("spiffe://example.org/billing/e", "service")
	e.micaOK("identity", "allow", "spiffe://example.org/billing/d")
	e.server.stop(t, syscall.SIGKILL)
	// Back up, and the server restarted: nothing is lost.
	r.down.Store(false)
	e.start()
	e.issue("spiffe://example.org/billing/f", "service")
	want := e.auditSeqs(t, start)
	waitFor(t, "every event to arrive after the restart", 90*time.Second, func() bool {
		ids := r.ids()
		return len(ids) > 0 && ids[len(ids)-1] >= want[len(want)-1] && len(ids) >= len(want)
	})

	// Events written after the snapshot (a failure summary, say) may have
	// arrived too, and events from before the cursor was first read (the
	// endpoint may have started a little earlier); the log in between
	// must have arrived whole.
	got := slices.DeleteFunc(r.ids(), func(seq int64) bool { return seq <= start || seq > want[len(want)-1] })
	if !slices.Equal(got, want) {
		t.Errorf("the receiver has events %v\n                    the log has %v", got, want)
	}
	r.mu.Lock()
	if len(r.bad) > 0 {
		t.Errorf("deliveries whose signature did not verify: %v", r.bad)
	}
	types := map[string]bool{}
	for _, ce := range r.events {
		types[ce.Type] = true
	}
	t.Logf("%d events, %d deliveries (%d repeats, dropped by id); types %v", len(r.events), r.deliveries, r.repeats, sortedKeys(types))
	r.mu.Unlock()
	for _, typ := range []string{"mica.cert.issued", "mica.cert.renewed", "mica.cert.revoked", "mica.issuance.refused",
		"mica.identity.denied", "mica.identity.allowed", "mica.cert.discovered", "mica.policy.loaded"} {
		if !types[typ] {
			t.Errorf("no %s event arrived", typ)
		}
	}
	waitFor(t, "the cursor to reach the end of the log", 30*time.Second, func() bool {
		st := status()
		return st.Lag == 0 && st.Cursor == st.LastSeq
	})
	if st := status(); st.DeadLetters != 0 || st.Failures != 0 || st.LastSuccess == nil {
		t.Errorf("status after the catch-up: %+v", st)
	}
	if table := e.micaOK("webhook", "status"); !strings.Contains(table, "cmdb") || strings.Contains(table, "not-shown") {
		t.Errorf("webhook status table:\n%s", table)
	}
	if n := scrapedValue(t, e.server.metricsURL, `mica_webhook_deliveries_total{endpoint="cmdb",outcome="delivered"}`); n < 1 {
		t.Errorf("delivered counter %v after the restart", n)
	}
}

// TestWebhookSlowReceiver measures issuance throughput with `mica bench
// issue` against one server, without webhooks and then with a receiver
// that takes 200 ms per event, and prints both: delivery reads the log
// behind issuance and never holds it up. Figures are printed, not
// asserted.
func TestWebhookSlowReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two 5-second benchmarks")
	}
	secretText := strings.TrimSpace(micaOK(t, nil, "webhook", "secret"))
	secret, _ := webhook.ParseSecret(secretText)
	r := newHookReceiver(t, secret)
	r.delay = 200 * time.Millisecond
	secretFile := filepath.Join(t.TempDir(), "slow.secret")
	os.WriteFile(secretFile, []byte(secretText), 0o600)
	benchConfig := strings.Replace(testConfig, `spiffe: ["/billing/*", "/expiring/*"]`, `spiffe: ["/billing/*", "/expiring/*", "/bench/*"]`, 1)
	e := newTestEnvFrom(t, "sqlite", benchConfig)
	measure := func() bench.IssueResult {
		t.Helper()
		out := e.micaOK("bench", "issue", "--server", e.server.url, "--data-dir", e.dataDir, "--concurrency", "8",
			"--duration", "5s", "--warmup", "1s", "--json")
		var res bench.IssueResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Issued == 0 {
			t.Fatalf("bench: %v\n%s", err, out)
		}
		return res
	}
	load := func() string {
		b, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(b))[:3], " ")
	}
	without := measure()
	loadWithout := load()

	// The same server, restarted with the slow receiver attached.
	cfgPath := filepath.Join(e.dataDir, configFileName)
	cfg, _ := os.ReadFile(cfgPath)
	cfg = fmt.Appendf(cfg, "webhooks:\n  - name: slow\n    url: %s/hook\n    secret_file: %s\n", r.srv.URL, secretFile)
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e.server.stop(t, syscall.SIGTERM)
	e.start()
	waitFor(t, "the slow receiver's endpoint to start", 60*time.Second, func() bool {
		var hooks []client.WebhookStatus
		json.Unmarshal([]byte(e.micaOK("webhook", "status", "--output", "json")), &hooks)
		return len(hooks) == 1 && hooks[0].Cursor > 0
	})
	with := measure()
	loadWith := load()
	var hooks []client.WebhookStatus
	json.Unmarshal([]byte(e.micaOK("webhook", "status", "--output", "json")), &hooks)
	t.Logf("mica bench issue --server, concurrency 8, 5s, SQLite (a shared 2-core machine: noisy):\n"+
		"  without webhooks:                   %.0f certificates/s, p50 %.1f ms, p99 %.1f ms (load average %s)\n"+
		"  with a receiver taking 200 ms/event: %.0f certificates/s, p50 %.1f ms, p99 %.1f ms (load average %s); the receiver took %d events, %d behind",
		without.PerSecond, without.P50Ms, without.P99Ms, loadWithout, with.PerSecond, with.P50Ms, with.P99Ms, loadWith, len(r.ids()), hooks[0].Lag)
}
