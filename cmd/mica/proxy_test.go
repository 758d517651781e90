package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/mtls"
)

// proxyProc is a running `mica proxy`.
type proxyProc struct {
	cmd       *exec.Cmd
	config    string
	listeners map[string]string // name → address
	metrics   string
	logs      *syncBuffer
	done      chan struct{}
}

var (
	proxyListenerLine = regexp.MustCompile(`mica proxy: listener (\S+) \((\S+)\) on (\S+)`)
	proxyReadyLine    = regexp.MustCompile(`mica proxy ready: metrics on (\S+)`)
)

// startProxy writes config and runs `mica proxy` on it until it is ready.
func startProxy(t *testing.T, config string, args ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{config: filepath.Join(t.TempDir(), "proxy.yaml"), listeners: map[string]string{},
		logs: &syncBuffer{}, done: make(chan struct{})}
	p.write(t, config)
	p.cmd = exec.Command(binary(t), append([]string{"proxy", "--config", p.config}, args...)...)
	p.cmd.Stderr = p.logs
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			if m := proxyListenerLine.FindStringSubmatch(sc.Text()); m != nil {
				p.listeners[m[1]] = m[3]
			}
			mu.Unlock()
			if m := proxyReadyLine.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
	}()
	go func() { p.cmd.Wait(); close(p.done) }()
	select {
	case p.metrics = <-ready:
	case <-p.done:
		t.Fatalf("mica proxy exited before it was ready:\n%s", p.logs.String())
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("mica proxy not ready within 60s:\n%s", p.logs.String())
	}
	mu.Lock()
	defer mu.Unlock()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.logs.String())
		}
	})
	return p
}

// write replaces the config file the way an editor or a deployment does:
// a new file renamed over the old.
func (p *proxyProc) write(t *testing.T, config string) {
	t.Helper()
	tmp := p.config + ".new"
	if err := os.WriteFile(tmp, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.config); err != nil {
		t.Fatal(err)
	}
}

func (p *proxyProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("mica proxy exited %d after SIGTERM", code)
		}
	case <-time.After(40 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("mica proxy did not stop within 40s of SIGTERM")
	}
}

// metric reads the sample of a counter or gauge whose labels include
// labels; 0 when there is none yet.
func (p *proxyProc) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return scrapeMetric(t, p.metrics, name, labels)
}

// scrapeMetric reads /metrics at addr and sums the samples of name whose
// labels include labels.
func scrapeMetric(t *testing.T, addr, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping %s: %v", addr, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics of %s: %v", addr, err)
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		if hasLabels(m, labels) {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// headerRecorder is the plain-HTTP backend behind the proxy: it keeps the
// headers of every request it gets.
type headerRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newHeaderRecorder(t *testing.T) *headerRecorder {
	h := &headerRecorder{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, r.Header.Clone())
		h.mu.Unlock()
		fmt.Fprintf(w, "hello %s\n", r.Header.Get("X-Mica-Peer-Id"))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *headerRecorder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

func (h *headerRecorder) last(t *testing.T) http.Header {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) == 0 {
		t.Fatal("the backend saw no request")
	}
	return h.seen[len(h.seen)-1]
}

// gatewayConfig is the server-side proxy: one inbound listener in front of
// the backend; allowed lists the client identities let in.
func gatewayConfig(credDir, server, listen, backend string, allowed ...string) string {
	return fmt.Sprintf(`credentials:
  dir: %s
revocation:
  feed: %s
metrics: 127.0.0.1:0
listeners:
  - name: billing
    mode: inbound
    listen: %s
    backend: %s
    allow:
      ids: [%s]
    set_headers:
      X-Env: test
`, credDir, server, listen, backend, strings.Join(allowed, ", "))
}

// TestProxy runs `mica proxy` between curl and a backend and between a
// plain-HTTP client and an mTLS upstream, all with certificates from a
// real `mica serve`: verified identity headers, forged ones removed,
// authorization, revocation by the feed, and reload on a config change and
// on SIGHUP.
func TestProxy(t *testing.T) {
	curlBin := toolPath(t, "curl")
	e := newTestEnv(t, "sqlite")
	const (
		gatewayID = "spiffe://example.org/gateway/billing"
		workerID  = "spiffe://example.org/billing/worker"
		outsider  = "spiffe://example.org/billing/outsider"
		legacyID  = "spiffe://example.org/billing/legacy"
	)
	gateway := e.issue(gatewayID+",billing.svc.example.org", "gateway")
	worker := e.issue(workerID, "service")
	other := e.issue(outsider, "service")
	legacy := e.issue(legacyID, "service")
	backend := newHeaderRecorder(t)
	// Any free port: the listener keeps its socket across reloads while
	// its name and configured address stay the same.
	const gwListen = "127.0.0.1:0"
	gw := startProxy(t, gatewayConfig(gateway, e.server.url, gwListen, backend.URL, workerID, legacyID), "--watch-interval", "200ms")
	listen := gw.listeners["billing"]
	_, portText, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("listeners %v: billing's address: %v", gw.listeners, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port == 0 {
		t.Fatalf("listeners %v: billing's port %q", gw.listeners, portText)
	}

	rootPEM := filepath.Join(e.dataDir, "ca", "root.pem")
	url := fmt.Sprintf("https://billing.svc.example.org:%d/invoices", port)
	resolve := fmt.Sprintf("billing.svc.example.org:%d:127.0.0.1", port)
	curlAs := func(cred string, extra ...string) curlResult {
		return curl(t, curlBin, rootPEM, resolve, url, cred, extra...)
	}

	t.Run("VerifiedIdentityReachesBackend", func(t *testing.T) {
		for _, proto := range []string{"--http1.1", "--http2"} {
			r := curlAs(worker, proto)
			if r.code != 200 || strings.TrimSpace(r.body) != "hello "+workerID {
				t.Fatalf("curl %s: %d %q %s", proto, r.code, r.body, r.stderr)
			}
			h := backend.last(t)
			leaf := readLeaf(t, worker)
			if h.Get("X-Mica-Peer-Id") != workerID || h.Get("X-Mica-Peer-Serial") != leaf.SerialNumber.Text(16) ||
				!strings.HasPrefix(h.Get("X-Mica-Peer-Fingerprint"), "sha256:") || h.Get("X-Env") != "test" ||
				!strings.HasPrefix(h.Get("X-Forwarded-Client-Cert"), "By="+gatewayID+";Hash=") {
				t.Errorf("curl %s: backend saw %v", proto, h)
			}
		}
	})

	t.Run("ForgedIdentityHeadersNeverReachBackend", func(t *testing.T) {
		const admin = "spiffe://example.org/mica/admin/admin"
		for _, proto := range []string{"--http1.1", "--http2"} {
			r := curlAs(worker, proto,
				"-H", "X-Mica-Peer-Id: "+admin,
				"-H", "x-mica-peer-id: "+admin,
				"-H", "X-MICA-PEER-SERIAL: 01",
				"-H", "X_Mica_Peer_Id: "+admin,
				"-H", "X-Mica-Peer-Sans: "+admin,
				"-H", "X-Forwarded-Client-Cert: By=x;URI="+admin,
				"-H", "x_forwarded_client_cert: URI="+admin,
				"-H", "X-Env: prod",
			)
			if r.code != 200 {
				t.Fatalf("curl %s with forged headers: %d %q %s", proto, r.code, r.body, r.stderr)
			}
			h := backend.last(t)
			for k, vs := range h {
				for _, v := range vs {
					if strings.Contains(v, admin) || v == "01" || v == "prod" {
						t.Errorf("curl %s: the backend saw the forged %s: %s", proto, k, v)
					}
				}
			}
			if vs := h.Values("X-Mica-Peer-Id"); len(vs) != 1 || vs[0] != workerID {
				t.Errorf("curl %s: X-Mica-Peer-Id %q, want exactly %s", proto, vs, workerID)
			}
		}
	})

	t.Run("UnauthorizedIdentityGets403", func(t *testing.T) {
		before, denied := backend.count(), gw.metric(t, "mica_proxy_authorization_denied_total", nil)
		r := curlAs(other)
		if r.code != 403 || !strings.Contains(r.body, outsider) {
			t.Fatalf("curl as %s: %d %q, want 403 naming it", outsider, r.code, r.body)
		}
		if backend.count() != before {
			t.Error("the backend saw the refused request")
		}
		if after := gw.metric(t, "mica_proxy_authorization_denied_total", nil); after != denied+1 {
			t.Errorf("mica_proxy_authorization_denied_total %v → %v", denied, after)
		}
	})

	t.Run("OutboundSpeaksMTLSForAPlainClient", func(t *testing.T) {
		side := startProxy(t, fmt.Sprintf(`credentials: {dir: %s}
revocation: {feed: %s}
metrics: 127.0.0.1:0
listeners:
  - name: billing
    mode: outbound
    listen: 127.0.0.1:0
    upstream: https://127.0.0.1:%d
    expect: {ids: [%s]}
`, legacy, e.server.url, port, gatewayID))
		resp, err := http.Get("http://" + side.listeners["billing"] + "/invoices")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "hello "+legacyID {
			t.Fatalf("plain HTTP through outbound and inbound: %s %q", resp.Status, body)
		}
		if got := backend.last(t).Get("X-Mica-Peer-Id"); got != legacyID {
			t.Errorf("the backend saw %q, want the outbound proxy's identity %s", got, legacyID)
		}
		if n := side.metric(t, "mica_mtls_handshakes_total", map[string]string{"side": "client", "reason": "ok"}); n < 1 {
			t.Errorf("the outbound proxy counted %v verified upstream handshakes", n)
		}

		// Expecting another identity, then SIGHUP: the upstream is refused.
		side.write(t, strings.Replace(mustRead(t, side.config), gatewayID, "spiffe://example.org/gateway/other", 1))
		side.cmd.Process.Signal(syscall.SIGHUP)
		eventually(t, "the outbound proxy reloads on SIGHUP and refuses the upstream", func() error {
			resp, err := http.Get("http://" + side.listeners["billing"] + "/invoices")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		})
		if n := side.metric(t, "mica_proxy_upstream_errors_total", map[string]string{"listener": "billing"}); n < 1 {
			t.Errorf("mica_proxy_upstream_errors_total = %v", n)
		}
	})

	t.Run("CredentialFromWorkloadAPI", func(t *testing.T) {
		const wlID = "spiffe://example.org/billing/workload-gateway"
		agent := e.startAgent(wlID, "1h")
		wl := startProxy(t, fmt.Sprintf(`credentials: {workload_api: unix://%s}
revocation: {feed: %s}
metrics: 127.0.0.1:0
listeners:
  - {name: wl, mode: inbound, listen: 127.0.0.1:0, backend: %s, allow: {ids: [%s]}}
`, agent.socket, e.server.url, backend.URL, workerID))
		src, err := mtls.NewFileSource(worker, mtls.WithPollInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		tc, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs(wlID)})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: tc}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + wl.listeners["wl"] + "/")
		if err != nil {
			t.Fatalf("a proxy whose SVID comes from the agent's Workload API: %v", err)
		}
		resp.Body.Close()
		if h := backend.last(t); resp.StatusCode != 200 || h.Get("X-Mica-Peer-Id") != workerID ||
			!strings.HasPrefix(h.Get("X-Forwarded-Client-Cert"), "By="+wlID+";") {
			t.Errorf("%s; the backend saw %v", resp.Status, h)
		}
	})

	t.Run("RevokedClientLosesLiveConnectionAndNextHandshake", func(t *testing.T) {
		doomed := e.issue("spiffe://example.org/billing/doomed", "service")
		cfg := gatewayConfig(gateway, e.server.url, gwListen, backend.URL, workerID, legacyID, "spiffe://example.org/billing/doomed")
		gw.write(t, cfg)
		eventually(t, "the new rule is applied", func() error {
			if r := curlAs(doomed); r.code != 200 {
				return fmt.Errorf("status %d %s", r.code, r.stderr)
			}
			return nil
		})
		// A kept-alive HTTP/1.1 connection from before the revocation,
		// spoken by hand so the test sees the proxy close it.
		src, err := mtls.NewFileSource(doomed, mtls.WithPollInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		tc, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs(gatewayID)})
		if err != nil {
			t.Fatal(err)
		}
		live, err := tls.Dial("tcp", listen, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		br := bufio.NewReader(live)
		fmt.Fprintf(live, "GET /invoices HTTP/1.1\r\nHost: billing.svc.example.org\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("a request on the live connection before the revocation: %v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		liveClosed := make(chan error, 1)
		go func() { _, err := br.ReadByte(); liveClosed <- err }()

		revokedFeed := map[string]string{"side": "server", "reason": "revoked_feed"}
		before := gw.metric(t, "mica_mtls_handshakes_total", revokedFeed)
		e.micaOK("cert", "revoke", readLeaf(t, doomed).SerialNumber.Text(16))
		select {
		case err := <-liveClosed:
			if err == nil {
				t.Fatal("the proxy sent bytes on the live connection nobody asked for")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the revoked client kept its live connection")
		}
		if n := gw.metric(t, "mica_mtls_connections_closed_total", map[string]string{"reason": "revoked_feed"}); n != 1 {
			t.Errorf("mica_mtls_connections_closed_total{reason=revoked_feed} = %v, want 1", n)
		}
		eventually(t, "the revoked client is refused in the handshake", func() error {
			if r := curlAs(doomed); r.code != 0 {
				return fmt.Errorf("status %d", r.code)
			}
			return nil
		})
		if after := gw.metric(t, "mica_mtls_handshakes_total", revokedFeed); after <= before {
			t.Errorf("mica_mtls_handshakes_total{reason=revoked_feed} %v → %v", before, after)
		}
		if r := curlAs(worker); r.code != 200 {
			t.Errorf("a live client after the revocation: %d %s", r.code, r.stderr)
		}
	})

	t.Run("ReloadKeepsListenerAndConnections", func(t *testing.T) {
		// A Go client with a kept-alive connection from before the reload.
		src, err := mtls.NewFileSource(worker, mtls.WithPollInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		tc, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs(gatewayID)})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: tc}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		reused := func() (bool, int) {
			var got bool
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) { got = i.Reused }})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+listen+"/invoices", nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return got, resp.StatusCode
		}
		if _, code := reused(); code != 200 {
			t.Fatalf("before reload: %d", code)
		}
		reloads := gw.metric(t, "mica_proxy_config_reloads_total", map[string]string{"result": "success"})
		if r := curlAs(other); r.code != 403 {
			t.Fatalf("outsider before reload: %d", r.code)
		}

		// A broken config is refused and the running one stays.
		gw.write(t, "listeners: [{name: billing, mode: sideways}]\n")
		eventually(t, "the broken config is counted as a failed reload", func() error {
			if gw.metric(t, "mica_proxy_config_reloads_total", map[string]string{"result": "failure"}) < 1 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if r := curlAs(worker); r.code != 200 {
			t.Fatalf("after a refused reload: %d", r.code)
		}

		gw.write(t, gatewayConfig(gateway, e.server.url, gwListen, backend.URL, workerID, legacyID, outsider))
		eventually(t, "the outsider is let in after the config file changed", func() error {
			if r := curlAs(other); r.code != 200 {
				return fmt.Errorf("status %d", r.code)
			}
			return nil
		})
		if after := gw.metric(t, "mica_proxy_config_reloads_total", map[string]string{"result": "success"}); after <= reloads {
			t.Errorf("mica_proxy_config_reloads_total{result=success} %v → %v", reloads, after)
		}
		if wasReused, code := reused(); !wasReused || code != 200 {
			t.Errorf("after reload: connection reused %v, status %d; want the kept-alive connection to carry on", wasReused, code)
		}
		if n := gw.metric(t, "mica_proxy_requests_total", map[string]string{"listener": "billing", "mode": "inbound", "code": "2xx"}); n < 5 {
			t.Errorf("mica_proxy_requests_total{code=2xx} = %v", n)
		}
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestProxyPinsAndCRLPolicy: the config's pinned_cas and crl_policy reach
// the running proxy. Pinned to mica's root, a client of mica's
// intermediate gets in; pinned to another CA, it is refused in the
// handshake with ca_not_pinned. Under hard-fail, while no CRL of the root
// can be had (its configured URL answers 404) the client is refused with
// crl_unavailable; with the root's CRL published, the intermediate's (from
// the distribution point in the client's certificate) and the root's let
// it in.
func TestProxyPinsAndCRLPolicy(t *testing.T) {
	curlBin := toolPath(t, "curl")
	e := newTestEnv(t, "sqlite")
	const workerID = "spiffe://example.org/billing/worker"
	gateway := e.issue("spiffe://example.org/gateway/billing,billing.svc.example.org", "gateway")
	worker := e.issue(workerID, "service")
	backend := newHeaderRecorder(t)
	rootPEM := filepath.Join(e.dataDir, "ca", "root.pem")
	root := readCertFile(t, rootPEM)
	rootCRLURL := e.server.httpURL + crl.Path(root)

	start := func(revocation, pins string) *proxyProc {
		return startProxy(t, fmt.Sprintf(`credentials: {dir: %s}
revocation: %s
pinned_cas: [%s]
metrics: 127.0.0.1:0
listeners:
  - {name: billing, mode: inbound, listen: 127.0.0.1:0, backend: %s, allow: {ids: [%s]}}
`, gateway, revocation, pins, backend.URL, workerID))
	}
	curlThrough := func(t *testing.T, p *proxyProc) curlResult {
		_, port, err := net.SplitHostPort(p.listeners["billing"])
		if err != nil {
			t.Fatalf("listeners %v: %v", p.listeners, err)
		}
		return curl(t, curlBin, rootPEM, "billing.svc.example.org:"+port+":127.0.0.1",
			"https://billing.svc.example.org:"+port+"/invoices", worker)
	}
	refusedWith := func(t *testing.T, p *proxyProc, reason mtls.Reason) {
		t.Helper()
		seen := backend.count()
		if r := curlThrough(t, p); r.code != 0 {
			t.Fatalf("status %d %q, want the handshake refused (%s)", r.code, r.body, reason)
		}
		if n := p.metric(t, "mica_mtls_handshakes_total", map[string]string{"side": "server", "reason": string(reason)}); n != 1 {
			t.Errorf("mica_mtls_handshakes_total{side=server,reason=%s} = %v, want 1", reason, n)
		}
		if backend.count() != seen {
			t.Error("the backend saw the refused client")
		}
	}
	feed := fmt.Sprintf("{feed: %s}", e.server.url)

	t.Run("PinnedRoot", func(t *testing.T) {
		p := start(feed, mtls.PinOf(root).String())
		if r := curlThrough(t, p); r.code != 200 {
			t.Fatalf("pinned to mica's root: %d %q %s", r.code, r.body, r.stderr)
		}
	})
	t.Run("PinnedOtherCA", func(t *testing.T) {
		other := mtls.SPKIPin(sha256.Sum256([]byte("another CA's SubjectPublicKeyInfo")))
		refusedWith(t, start(feed, other.String()), mtls.ReasonNotPinned)
	})
	hardFail := fmt.Sprintf("{crl_urls: [%s], crl_policy: hard-fail, crl_wait: 10s}", rootCRLURL)
	t.Run("HardFailWithoutRootCRL", func(t *testing.T) {
		nowhere := fmt.Sprintf("{crl_urls: [%s], crl_policy: hard-fail, crl_wait: 2s}", e.server.httpURL+"/crl/no-such.crl")
		refusedWith(t, start(nowhere, ""), mtls.ReasonCRLUnavailable)
	})
	t.Run("HardFailWithCRLs", func(t *testing.T) {
		e.micaOK("ca", "root-crl", "--validity", "720h")
		if r := curlThrough(t, start(hardFail, "")); r.code != 200 {
			t.Fatalf("hard-fail with the root's and the intermediate's CRLs: %d %q %s", r.code, r.body, r.stderr)
		}
	})
}
