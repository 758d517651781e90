package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// promProc is a real Prometheus scraping mica processes with the shipped
// alert rules, every second.
type promProc struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

// startPrometheus runs Debian's prometheus on loopback with the shipped
// rules and one scrape job per entry of targets (job → host:port).
func startPrometheus(t *testing.T, targets map[string][]string) *promProc {
	t.Helper()
	bin := toolPath(t, "prometheus")
	rules, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n", rules)
	for job, addrs := range targets {
		quoted := make([]string, len(addrs))
		for i, a := range addrs {
			quoted[i] = strconv.Quote(a)
		}
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs: [{targets: [%s]}]\n", job, strings.Join(quoted, ", "))
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	p := &promProc{url: "http://" + addr, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s\nconfig:\n%s", p.logs.String(), cfg.String())
		}
	})
	waitFor(t, "prometheus to be ready", 60*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("prometheus exited:\n%s", p.logs.String())
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// promAlert is an alert as Prometheus's API reports it.
type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"` // pending or firing
	ActiveAt time.Time         `json:"activeAt"`
}

func (p *promProc) get(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("prometheus %s: %s\n%s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("prometheus %s: %v\n%s", path, err, body)
	}
}

// alerts are the active (pending or firing) alerts.
func (p *promProc) alerts(t *testing.T) []promAlert {
	t.Helper()
	var r struct {
		Data struct{ Alerts []promAlert }
	}
	p.get(t, "/api/v1/alerts", &r)
	return r.Data.Alerts
}

// active finds the alert named name whose labels include want.
func (p *promProc) active(t *testing.T, name string, want map[string]string) (promAlert, bool) {
	t.Helper()
next:
	for _, a := range p.alerts(t) {
		if a.Labels["alertname"] != name {
			continue
		}
		for k, v := range want {
			if a.Labels[k] != v {
				continue next
			}
		}
		return a, true
	}
	return promAlert{}, false
}

// waitActive waits until the alert is active in one of states.
func (p *promProc) waitActive(t *testing.T, name string, want map[string]string, states ...string) promAlert {
	t.Helper()
	var got promAlert
	waitFor(t, fmt.Sprintf("%s %v to be %v", name, want, states), 90*time.Second, func() bool {
		a, ok := p.active(t, name, want)
		got = a
		return ok && (len(states) == 0 || strings.Contains(strings.Join(states, ","), a.State))
	})
	return got
}

// value is the instant query's first sample, false when it has none.
func (p *promProc) value(t *testing.T, query string) (float64, bool) {
	t.Helper()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	p.get(t, "/api/v1/query?query="+url.QueryEscape(query), &r)
	if len(r.Data.Result) == 0 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// TestAlertsWithPrometheus runs a real Prometheus with the shipped rules,
// scraping a real server, two agents and a proxy every second, with
// certificates of minutes, and checks that the alerts fire, or clear, as
// an on-call engineer needs them to:
//   - a profile renewed for the first time clears "expiring without renewal"
//     (the renewal counter is exported at zero from start-up);
//   - an agent whose renewals fail alerts before its 1-minute certificate
//     expires, while one renewing normally stays silent;
//   - an anomaly with action alert and a rate limit alert;
//   - the root CRL's freshness is watched;
//   - a bad request refused before the authority is counted by route and code;
//   - the proxy reports its feed connection, alerts when the feed is cut,
//     and is in the target-down job filter.
//
// Alerts with a "for" are checked in their pending state: the expression
// holds, which is what the shipped durations then wait on.
func TestAlertsWithPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mica serve, agents, a proxy and Prometheus")
	}
	e := newTestEnvWith(t, "sqlite", `limits:
  profiles:
    web:
      per_requester: {rate: 1/h, burst: 2}
anomalies:
  profiles:
    web:
      issuance_burst: {action: alert, window: 1m, per_profile: 1, per_requester: 300}
`)
	steady := e.startAgent("spiffe://example.org/billing/steady", "2m")
	stuck := e.startAgent("spiffe://example.org/billing/stuck", "1m")
	// The stuck agent's certificate is revoked: every renewal is refused.
	stuckLeaf := readLeaf(t, stuck.out)
	e.micaOK("cert", "revoke", stuckLeaf.SerialNumber.Text(16), "--reason", "keyCompromise")

	gateway := e.issue("spiffe://example.org/gateway/billing,billing.svc.example.org", "gateway", "--ttl", "30m")
	renewable := e.issue("spiffe://example.org/gateway/renewable", "gateway", "--ttl", "30m")
	backend := newHeaderRecorder(t)
	gw := startProxy(t, gatewayConfig(gateway, e.server.url, "127.0.0.1:0", backend.URL,
		"spiffe://example.org/billing/worker"))

	prom := startPrometheus(t, map[string][]string{
		"mica":       {strings.TrimSuffix(strings.TrimPrefix(e.server.metricsURL, "http://"), "/metrics")},
		"mica-agent": {steady.metrics, stuck.metrics},
		"mica-proxy": {gw.metrics},
	})

	t.Run("RenewalClearsExpiringWithoutRenewal", func(t *testing.T) {
		renewed := `mica_issuance_requests_total{job="mica",door="renew",profile="gateway",outcome="issued"}`
		waitFor(t, "the gateway renewal counter, at zero, in Prometheus", 60*time.Second, func() bool {
			v, ok := prom.value(t, renewed)
			return ok && v == 0
		})
		prom.waitActive(t, "MicaCertificatesExpiringWithoutRenewal", map[string]string{"profile": "gateway"})
		e.micaOK("cert", "renew", "--cert", filepath.Join(renewable, certFile), "--key", filepath.Join(renewable, keyFile))
		waitFor(t, "the renewal to clear the alert", 60*time.Second, func() bool {
			_, ok := prom.active(t, "MicaCertificatesExpiringWithoutRenewal", map[string]string{"profile": "gateway"})
			return !ok
		})
	})

	t.Run("AnomalyAndRateLimit", func(t *testing.T) {
		for i, want := range []bool{true, true, false} {
			tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", fmt.Sprintf("w%d.svc.example.org", i), "--profile", "web"))
			r := e.mica("cert", "issue", "--token", tok, "--out", t.TempDir())
			if (r.code == 0) != want {
				t.Fatalf("web enrollment %d: exit %d (%s), want success %v", i, r.code, r.stderr, want)
			}
		}
		prom.waitActive(t, "MicaAnomalyDetected", map[string]string{"kind": "issuance_burst", "profile": "web", "action": "alert"}, "firing")
		prom.waitActive(t, "MicaRateLimiting", map[string]string{"scope": "requester", "profile": "web"})
	})

	t.Run("RefusedBeforeTheAuthorityIsCounted", func(t *testing.T) {
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e.roots)}}).Post(
			e.server.url+"/v1/certificates", "application/json", strings.NewReader(`{"token": "x", "csr": "not a CSR"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 4 {
			t.Fatalf("a bad enrollment got %s", resp.Status)
		}
		q := fmt.Sprintf(`sum(mica_http_requests_total{job="mica",listener="api",route="POST /v1/certificates",code="%d"})`, resp.StatusCode)
		waitFor(t, q+" in Prometheus", 60*time.Second, func() bool {
			v, ok := prom.value(t, q)
			return ok && v >= 1
		})
	})

	t.Run("RootCRLFreshness", func(t *testing.T) {
		if _, ok := prom.active(t, "MicaRootCRLExpiring", nil); ok {
			t.Fatal("root CRL alert active before any root CRL was published")
		}
		e.micaOK("ca", "root-crl", "--validity", "48h")
		prom.waitActive(t, "MicaRootCRLExpiring", map[string]string{"job": "mica"})
	})

	t.Run("AgentExpiringBeforeExpiry", func(t *testing.T) {
		a := prom.waitActive(t, "MicaAgentCertificateExpiring", map[string]string{"identity": "spiffe://example.org/billing/stuck"}, "firing")
		if !a.ActiveAt.Before(stuckLeaf.NotAfter) {
			t.Errorf("the stuck agent's alert became active at %v, not before its certificate expired at %v", a.ActiveAt, stuckLeaf.NotAfter)
		}
		if _, ok := prom.active(t, "MicaAgentCertificateExpiring", map[string]string{"identity": "spiffe://example.org/billing/steady"}); ok {
			t.Error("the agent that renews normally alerts too")
		}
	})

	t.Run("ProxyFeed", func(t *testing.T) {
		waitFor(t, "the proxy's feed connection in Prometheus", 60*time.Second, func() bool {
			v, ok := prom.value(t, `mica_revocation_feed_connected{job="mica-proxy"}`)
			return ok && v == 1
		})
		if _, ok := prom.active(t, "MicaRevocationFeedDisconnected", nil); ok {
			t.Error("feed disconnected alert while the proxy is connected")
		}
		e.server.stop(t, syscall.SIGTERM)
		prom.waitActive(t, "MicaRevocationFeedDisconnected", map[string]string{"job": "mica-proxy"})
		prom.waitActive(t, "MicaTargetDown", map[string]string{"job": "mica"})
		waitFor(t, "the proxy to log the cut", 30*time.Second, func() bool {
			return strings.Contains(gw.logs.String(), "revocation feed cut")
		})
		gw.stop(t)
		prom.waitActive(t, "MicaTargetDown", map[string]string{"job": "mica-proxy"})
	})
}

// TestRateLimitsAcrossReplicas runs two `mica serve` on one PostgreSQL
// and enrolls through both in turn: a requester limit of three holds for
// the pair, not for each server, and the refusal is counted where it
// happened.
func TestRateLimitsAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two servers on PostgreSQL")
	}
	e := newTestEnvWith(t, "postgres", `limits:
  profiles:
    web:
      per_requester: {rate: 1/h, burst: 3}
`)
	second := startServe(t, e.env)
	servers := []*serverProc{e.server, second}
	for i := range 4 {
		srv := servers[i%2]
		tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", fmt.Sprintf("r%d.svc.example.org", i), "--profile", "web"))
		r := e.mica("cert", "issue", "--server", srv.url, "--token", tok, "--out", t.TempDir())
		if i < 3 && r.code != 0 {
			t.Fatalf("enrollment %d through server %d refused: %s", i, i%2+1, r.stderr)
		}
		if i == 3 {
			if r.code == 0 {
				t.Fatal("a fourth enrollment by the same requester was admitted: each replica kept its own limit")
			}
			if !strings.Contains(r.stderr, "too many requests from requester") {
				t.Errorf("the fourth enrollment failed, but not by the rate limit: %s", r.stderr)
			}
			if v := scrapedValue(t, srv.metricsURL, `mica_rate_limited_total{profile="web",scope="requester"}`); v != 1 {
				t.Errorf("server %d counted %v requester refusals for web, want 1", i%2+1, v)
			}
		}
	}
}
