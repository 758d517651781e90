package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
	"github.com/mica-pki/mica/revocation"
)

// staticSource is a credential that never changes; the file and Workload
// API sources are mtls's to test.
type staticSource struct {
	cert  tls.Certificate
	roots []*x509.Certificate
}

func (s *staticSource) Certificate() (*tls.Certificate, error) { return &s.cert, nil }
func (s *staticSource) Roots() []*x509.Certificate             { return s.roots }

// world is a PKI, a backend that records what reaches it, and helpers to
// make proxies and clients with identities of the PKI.
type world struct {
	t       testing.TB
	pki     *testpki.PKI
	backend *recorder
}

func newWorld(t testing.TB) *world {
	return &world{t: t, pki: testpki.New(t, "example.org"), backend: newRecorder(t)}
}

func (w *world) source(path string, opts ...testpki.LeafOption) *staticSource {
	leaf := w.pki.Leaf(w.t, w.pki.ID(w.t, path), opts...)
	return &staticSource{cert: leaf.TLS(), roots: []*x509.Certificate{w.pki.Root}}
}

// proxy starts a Proxy with the identity path and listeners; its metrics
// are in reg.
func (w *world) proxy(path string, ls ...ListenerConfig) (*Proxy, *Metrics) {
	w.t.Helper()
	return w.proxyWith(path, nil, ls...)
}

// proxyWith is proxy with a revocation set, and running (Run) when set is
// not nil.
func (w *world) proxyWith(path string, set *revocation.Set, ls ...ListenerConfig) (*Proxy, *Metrics) {
	w.t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		w.t.Fatal(err)
	}
	hm, err := mtlsprom.New(reg)
	if err != nil {
		w.t.Fatal(err)
	}
	p, err := New(Options{Source: w.source(path), Metrics: m, HandshakeMetrics: hm, Revocations: set, DrainTimeout: 5 * time.Second})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := p.Apply(ls); err != nil {
		w.t.Fatal(err)
	}
	if set == nil {
		w.t.Cleanup(p.Shutdown)
		return p, m
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	w.t.Cleanup(func() { cancel(); <-done })
	return p, m
}

// client speaks mTLS with the identity at path to a server that must be
// spiffe://example.org/proxy; h2 asks for HTTP/2.
func (w *world) client(path string, h2 bool) *http.Client {
	w.t.Helper()
	return w.clientWith(w.source(path), h2)
}

func (w *world) clientWith(src mtls.Source, h2 bool) *http.Client {
	w.t.Helper()
	tc, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs("spiffe://example.org/proxy")})
	if err != nil {
		w.t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: h2}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func addrOf(p *Proxy, name string) string {
	for _, l := range p.Listeners() {
		if l.Name == name {
			return l.Addr.String()
		}
	}
	return ""
}

// recorder is a plain-HTTP backend that keeps the headers of every request.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	more chan struct{} // closed and replaced at every request
	// hold, when set, blocks a request for /slow until it is closed.
	hold chan struct{}
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{more: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		c := req.Clone(context.Background())
		c.Body = io.NopCloser(bytes.NewReader(body))
		r.seen = append(r.seen, c)
		close(r.more)
		r.more = make(chan struct{})
		hold := r.hold
		r.mu.Unlock()
		if req.URL.Path == "/slow" && hold != nil {
			<-hold
		}
		fmt.Fprintf(w, "backend %s saw %s", r.URL, req.Header.Get(HeaderPeerID))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.seen...)
}

// waitRequests waits until the backend has seen n requests; the deadline
// only bounds a broken test.
func (r *recorder) waitRequests(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		seen, more := len(r.seen), r.more
		r.mu.Unlock()
		if seen >= n {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("the backend saw %d requests, want %d, within 20s", seen, n)
		}
	}
}

func (r *recorder) last(t *testing.T) *http.Request {
	t.Helper()
	seen := r.requests()
	if len(seen) == 0 {
		t.Fatal("the backend saw no request")
	}
	return seen[len(seen)-1]
}

func inbound(name, backend string, allow *Rule, routes ...Route) ListenerConfig {
	return ListenerConfig{Name: name, Mode: Inbound, Listen: "127.0.0.1:0", Backend: backend, Allow: allow, Routes: routes}
}

// get requests path from the listener and returns the status and body.
func get(t *testing.T, c *http.Client, addr, path string, hdr http.Header) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v // as given: non-canonical spellings stay so on the wire
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

func TestIdentityHeadersReplaceForgedOnes(t *testing.T) {
	w := newWorld(t)
	cfg := inbound("in", w.backend.URL, &Rule{TrustDomains: []string{"example.org"}})
	cfg.StripHeaders = []string{"X-User"}
	cfg.SetHeaders = map[string]string{"X-Env": "prod"}
	p, _ := w.proxy("/proxy", cfg)
	forged := func(h2 bool) http.Header {
		h := http.Header{
			"X-Mica-Peer-Id":          {"spiffe://example.org/admin"},
			"x-mica-peer-id":          {"spiffe://example.org/admin"},
			"X-MICA-PEER-SERIAL":      {"01"},
			"X_Mica_Peer_Id":          {"spiffe://example.org/admin"},
			"x_mica_peer_fingerprint": {"sha256:00"},
			"X-Mica-Future-Header":    {"forged"},
			"X-Forwarded-Client-Cert": {"By=x;URI=spiffe://example.org/admin"},
			"x_forwarded_client_cert": {"URI=spiffe://example.org/admin"},
			"X-User":                  {"root"},
			"X_user":                  {"root"},
			"X-Env":                   {"dev"},
			"x_env":                   {"dev"},
			"X-Forwarded-For":         {"10.0.0.1"},
			"X-Ordinary":              {"kept"},
		}
		if !h2 { // HTTP/2 has no Connection header
			h["Connection"] = []string{"X-Hop"}
			h["X-Hop"] = []string{"hop-by-hop"}
		}
		return h
	}
	ours := map[string]bool{HeaderPeerID: true, HeaderPeerSANs: true, HeaderPeerSerial: true, HeaderPeerFingerprint: true,
		HeaderXFCC: true, "X-Env": true}
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			clientSrc := w.source("/billing/worker")
			c := w.clientWith(clientSrc, h2)
			code, body, resp := get(t, c, addrOf(p, "in"), "/x", forged(h2))
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			if wantProto := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantProto {
				t.Errorf("client spoke HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantProto)
			}
			got := w.backend.last(t).Header
			leaf := clientSrc.cert.Leaf
			sum := sha256.Sum256(leaf.Raw)
			want := map[string]string{
				HeaderPeerID:          "spiffe://example.org/billing/worker",
				HeaderPeerSANs:        "spiffe://example.org/billing/worker",
				HeaderPeerSerial:      leaf.SerialNumber.Text(16),
				HeaderPeerFingerprint: "sha256:" + hex.EncodeToString(sum[:]),
				HeaderXFCC:            "By=spiffe://example.org/proxy;Hash=" + hex.EncodeToString(sum[:]) + ";URI=spiffe://example.org/billing/worker",
				"X-Env":               "prod",
				"X-Ordinary":          "kept",
				"X-Forwarded-For":     "127.0.0.1",
			}
			for k, v := range want {
				if vs := got.Values(k); len(vs) != 1 || vs[0] != v {
					t.Errorf("backend saw %s: %q, want exactly %q", k, vs, v)
				}
			}
			for k := range got {
				n := normalizeHeaderName(k)
				forgedName := strings.HasPrefix(n, "x-mica-") || n == "x-forwarded-client-cert" || n == "x-env"
				if (forgedName && !ours[k]) || n == "x-user" || n == "x-hop" {
					t.Errorf("backend saw a header the client sent: %s: %q", k, got[k])
				}
			}
		})
	}
}

func TestAuthorizationByIdentityAndPath(t *testing.T) {
	w := newWorld(t)
	p, m := w.proxy("/proxy", inbound("in", w.backend.URL,
		&Rule{IDs: []string{"spiffe://example.org/billing/worker"}, IDPrefixes: []string{"spiffe://example.org/ops/"}},
		Route{Path: "/admin", Allow: &Rule{IDs: []string{"spiffe://example.org/ops/admin"}}},
		Route{Path: "/public/", Allow: &Rule{TrustDomains: []string{"example.org"}}},
	))
	addr := addrOf(p, "in")
	tests := []struct {
		name, client, path string
		want               int
	}{
		{"listed ID", "/billing/worker", "/invoices", 200},
		{"ID under a listed prefix", "/ops/oncall", "/invoices", 200},
		{"unlisted ID", "/billing/other", "/invoices", 403},
		{"prefix is not a string prefix", "/opsx/evil", "/invoices", 403},
		{"route refuses the listener's IDs", "/billing/worker", "/admin/users", 403},
		{"route matches its exact path", "/billing/worker", "/admin", 403},
		{"route allows its ID", "/ops/admin", "/admin/users", 200},
		{"route prefix is per segment", "/billing/worker", "/administrator", 200},
		{"route by trust domain", "/billing/other", "/public/x", 200},
		{"dot segments cannot dodge a route", "/billing/worker", "/public/../admin/users", 400},
		{"encoded slash cannot dodge a route", "/billing/worker", "/public%2F..%2Fadmin", 400},
		{"double slash is refused", "/billing/worker", "//admin/users", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(w.backend.requests())
			deniedBefore := testutil.ToFloat64(m.denied.WithLabelValues("in"))
			code, body, _ := get(t, w.client(tt.client, false), addr, tt.path, nil)
			if code != tt.want {
				t.Fatalf("status %d (%s), want %d", code, body, tt.want)
			}
			reached := len(w.backend.requests()) > before
			if reached != (tt.want == 200) {
				t.Errorf("backend reached: %v, want %v", reached, tt.want == 200)
			}
			if denied := testutil.ToFloat64(m.denied.WithLabelValues("in")) - deniedBefore; (tt.want == 403) != (denied == 1) {
				t.Errorf("mica_proxy_authorization_denied_total moved by %v", denied)
			}
			if tt.want == 403 && !strings.Contains(body, "spiffe://example.org"+tt.client) {
				t.Errorf("403 body %q does not say who was refused", body)
			}
		})
	}
	refused := 0
	for _, tt := range tests {
		if tt.want >= 400 {
			refused++
		}
	}
	// Counted when the handler returns, just after the client has its
	// answer; Shutdown waits for every handler to return.
	p.Shutdown()
	if got := testutil.ToFloat64(m.requests.WithLabelValues("in", "inbound", "4xx")); got != float64(refused) {
		t.Errorf("mica_proxy_requests_total{code=4xx} = %v, want every refusal (%d)", got, refused)
	}
}

func TestHandshakeRefusesUntrustedClients(t *testing.T) {
	w := newWorld(t)
	p, _ := w.proxy("/proxy", inbound("in", w.backend.URL, &Rule{TrustDomains: []string{"example.org"}}))
	other := testpki.New(t, "example.org")
	stranger := &staticSource{cert: other.Leaf(t, other.ID(t, "/billing/worker")).TLS(), roots: []*x509.Certificate{w.pki.Root}}
	if code, body, _ := get(t, w.clientWith(stranger, false), addrOf(p, "in"), "/", nil); code != 0 {
		t.Fatalf("a certificate from another CA got status %d %s", code, body)
	}
	// No certificate at all.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr}).Get("https://" + addrOf(p, "in") + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %s", resp.Status)
	}
	if n := len(w.backend.requests()); n != 0 {
		t.Errorf("the backend saw %d requests", n)
	}
}

func TestReloadKeepsListenersAndInFlightRequests(t *testing.T) {
	w := newWorld(t)
	second := newRecorder(t)
	only := func(id string) *Rule { return &Rule{IDs: []string{id}} }
	worker := "spiffe://example.org/billing/worker"
	p, _ := w.proxy("/proxy",
		inbound("in", w.backend.URL, only(worker)),
		inbound("gone", w.backend.URL, only(worker)))
	addr, goneAddr := addrOf(p, "in"), addrOf(p, "gone")
	c, other := w.client("/billing/worker", false), w.client("/billing/other", false)
	if code, _, _ := get(t, other, addr, "/", nil); code != 403 {
		t.Fatalf("before reload: %d", code)
	}

	// A slow request on each listener, in flight during the reload.
	hold := make(chan struct{})
	w.backend.mu.Lock()
	w.backend.hold = hold
	w.backend.mu.Unlock()
	type result struct {
		code int
		body string
	}
	inflight := make(chan result, 2)
	for _, a := range []string{addr, goneAddr} {
		go func() {
			code, body, _ := get(t, c, a, "/slow", nil)
			inflight <- result{code, body}
		}()
	}
	w.backend.waitRequests(t, 2)

	next := inbound("in", second.URL, &Rule{IDs: []string{worker, "spiffe://example.org/billing/other"}})
	if err := p.Apply([]ListenerConfig{next}); err != nil {
		t.Fatal(err)
	}
	if got := addrOf(p, "in"); got != addr {
		t.Errorf("listener moved from %s to %s", addr, got)
	}
	if code, body, _ := get(t, other, addr, "/", nil); code != 200 || !strings.Contains(body, second.URL) {
		t.Errorf("after reload: %d %q, want 200 from the new backend", code, body)
	}
	if conn, err := net.DialTimeout("tcp", goneAddr, time.Second); err == nil {
		conn.Close()
		t.Errorf("the removed listener still accepts connections")
	}
	close(hold)
	for range 2 {
		r := <-inflight
		if r.code != 200 || !strings.Contains(r.body, w.backend.URL) {
			t.Errorf("in-flight request: %d %q, want 200 from the old backend", r.code, r.body)
		}
	}

	// An invalid config and an address in use change nothing.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := inbound("taken", w.backend.URL, only(worker))
	taken.Listen = busy.Addr().String()
	for _, bad := range [][]ListenerConfig{
		{{Name: "in", Mode: "sideways", Listen: "127.0.0.1:0"}},
		{next, taken},
	} {
		if err := p.Apply(bad); err == nil {
			t.Errorf("Apply(%+v) succeeded", bad)
		}
	}
	if code, _, _ := get(t, other, addr, "/", nil); code != 200 {
		t.Errorf("after refused reloads: %d, want the previous config's 200", code)
	}
}

func TestOutboundReachesMTLSUpstream(t *testing.T) {
	w := newWorld(t)
	inProxy, _ := w.proxy("/proxy", inbound("in", w.backend.URL, &Rule{IDs: []string{"spiffe://example.org/legacy/app"}}))
	out := ListenerConfig{Name: "out", Mode: Outbound, Listen: "127.0.0.1:0", Upstream: "https://" + addrOf(inProxy, "in"),
		Expect: &Rule{IDs: []string{"spiffe://example.org/proxy"}}}
	wrong := out
	wrong.Name, wrong.Expect = "wrong", &Rule{IDs: []string{"spiffe://example.org/someone-else"}}
	outProxy, m := w.proxy("/legacy/app", out, wrong)

	resp, err := http.Get("http://" + addrOf(outProxy, "out") + "/ledger")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || w.backend.last(t).Header.Get(HeaderPeerID) != "spiffe://example.org/legacy/app" {
		t.Fatalf("through outbound and inbound: %s %q; the backend saw %q", resp.Status, body, w.backend.last(t).Header.Get(HeaderPeerID))
	}

	resp, err = http.Get("http://" + addrOf(outProxy, "wrong") + "/ledger")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("upstream with the wrong identity: %s, want 502", resp.Status)
	}
	if got := testutil.ToFloat64(m.upstream.WithLabelValues("wrong")); got != 1 {
		t.Errorf("mica_proxy_upstream_errors_total{listener=wrong} = %v, want 1", got)
	}
}

func TestOutboundResumesSessions(t *testing.T) {
	w := newWorld(t)
	resumed := make(chan bool, 4)
	upstreamSrc := w.source("/ledger/api")
	tc, err := mtls.ServerConfig(mtls.Options{Source: upstreamSrc, Authorize: mtls.AuthorizeIDs("spiffe://example.org/legacy/app")})
	if err != nil {
		t.Fatal(err)
	}
	// httptest's StartTLS would add its own certificate; wrap the
	// listener instead.
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		peer, _ := mtls.PeerIdentity(r)
		resumed <- r.TLS.DidResume
		fmt.Fprint(rw, peer.Identity.Primary())
	}))
	up.Listener = tls.NewListener(up.Listener, tc)
	up.Start()
	defer up.Close()
	p, _ := w.proxy("/legacy/app", ListenerConfig{Name: "out", Mode: Outbound, Listen: "127.0.0.1:0", Upstream: "https://" + up.Listener.Addr().String(),
		Expect: &Rule{IDs: []string{"spiffe://example.org/ledger/api"}}})
	var got []bool
	for range 2 {
		resp, err := http.Get("http://" + addrOf(p, "out") + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "spiffe://example.org/legacy/app" {
			t.Fatalf("%s %q", resp.Status, body)
		}
		got = append(got, <-resumed)
		// A new connection next time.
		p.servers[serverKey(p.current[0])].handler.Load().transport.CloseIdleConnections()
	}
	if got[0] || !got[1] {
		t.Errorf("resumed = %v, want a full handshake then a resumed one", got)
	}
}

func TestBodyLimit(t *testing.T) {
	w := newWorld(t)
	cfg := inbound("in", w.backend.URL, &Rule{TrustDomains: []string{"example.org"}})
	cfg.MaxBodyBytes = 1024
	p, _ := w.proxy("/proxy", cfg)
	c := w.client("/billing/worker", false)
	post := func(body io.Reader) int {
		resp, err := c.Post("https://"+addrOf(p, "in")+"/upload", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(bytes.NewReader(make([]byte, 1024))); code != 200 {
		t.Errorf("1024 bytes: %d", code)
	}
	if code := post(bytes.NewReader(make([]byte, 1025))); code != 413 {
		t.Errorf("1025 bytes with a length: %d, want 413", code)
	}
	// Without a Content-Length the limit bites while streaming.
	if code := post(io.MultiReader(bytes.NewReader(make([]byte, 4096)))); code != 413 {
		t.Errorf("4096 bytes chunked: %d, want 413", code)
	}
}

func TestValidate(t *testing.T) {
	ok := inbound("in", "http://127.0.0.1:8080", &Rule{TrustDomains: []string{"example.org"}})
	ok.Listen = "127.0.0.1:8444"
	out := ListenerConfig{Name: "out", Mode: Outbound, Listen: "127.0.0.1:9000", Upstream: "https://ledger:8444", Expect: &Rule{IDs: []string{"spiffe://example.org/ledger"}}}
	with := func(c ListenerConfig, f func(*ListenerConfig)) ListenerConfig { f(&c); return c }
	tests := []struct {
		name string
		ls   []ListenerConfig
		want string // in the error; "" for valid
	}{
		{"valid", []ListenerConfig{ok, out}, ""},
		{"none", nil, "no listeners"},
		{"no name", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Name = "" })}, "name is required"},
		{"same name", []ListenerConfig{ok, with(ok, func(c *ListenerConfig) { c.Listen = "127.0.0.1:1" })}, "used twice"},
		{"same address", []ListenerConfig{ok, with(ok, func(c *ListenerConfig) { c.Name = "b" })}, "also listener"},
		{"bad mode", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Mode = "both" })}, "use inbound or outbound"},
		{"bad listen", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Listen = "8443" })}, "not host:port"},
		{"https backend", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Backend = "https://x" })}, "backend"},
		{"no allow", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Allow = nil })}, "allow (or routes) is required"},
		{"empty allow", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Allow = &Rule{} })}, "names no identity"},
		{"bad ID", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Allow = &Rule{IDs: []string{"spiffe://a/b,spiffe://c/d"}} })}, "ids"},
		{"bad prefix", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Allow = &Rule{IDPrefixes: []string{"/billing/"}} })}, "id_prefixes"},
		{"bad trust domain", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Allow = &Rule{TrustDomains: []string{"Ex ample"}} })}, "trust_domains"},
		{"route without slash", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Routes = []Route{{Path: "admin", Allow: c.Allow}} })}, "must start with /"},
		{"route without allow", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.Routes = []Route{{Path: "/admin"}} })}, "allow is required"},
		{"setting an identity header", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.SetHeaders = map[string]string{"x_mica_peer_id": "x"} })}, "cannot be set"},
		{"bad header", []ListenerConfig{with(ok, func(c *ListenerConfig) { c.StripHeaders = []string{"X User"} })}, "strip_headers"},
		{"outbound beyond loopback", []ListenerConfig{with(out, func(c *ListenerConfig) { c.Listen = "0.0.0.0:9000" })}, "must be on loopback"},
		{"outbound over http", []ListenerConfig{with(out, func(c *ListenerConfig) { c.Upstream = "http://ledger" })}, "upstream"},
		{"outbound without expect", []ListenerConfig{with(out, func(c *ListenerConfig) { c.Expect = nil })}, "expect is required"},
		{"outbound with allow", []ListenerConfig{with(out, func(c *ListenerConfig) { c.Allow = ok.Allow })}, "for inbound listeners"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.ls)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			case err != nil && !strings.HasPrefix(err.Error(), "proxy: "):
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		decoded, escaped string
		want             bool
	}{
		{"/", "/", true},
		{"/a/b", "/a/b", true},
		{"/a/b/", "/a/b/", true},
		{"/a%20b", "/a%2520b", true},
		{"/a/../b", "/a/../b", false},
		{"/a/./b", "/a/./b", false},
		{"/a//b", "/a//b", false},
		{"/a/b", "/a%2Fb", false},
		{"/a/..", "/a/%2e%2e", false},
		{`/a\b`, `/a%5Cb`, false},
		{"", "", false},
		{"a", "a", false},
	}
	for _, tt := range tests {
		if got := canonicalPath(tt.decoded, tt.escaped); got != tt.want {
			t.Errorf("canonicalPath(%q, %q) = %v, want %v", tt.decoded, tt.escaped, got, tt.want)
		}
	}
}

func TestProxyErrorsArePrefixed(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.HasPrefix(err.Error(), "proxy: ") {
		t.Errorf("New without a source: %v", err)
	}
	if _, err := NewMetrics(nil); err == nil || !errors.Is(err, err) || !strings.HasPrefix(err.Error(), "proxy: ") {
		t.Errorf("NewMetrics(nil): %v", err)
	}
}

// craftedSource is a client credential signed by the world's intermediate
// outside mica's issuance (which would refuse it), shaped by edit.
func (w *world) craftedSource(edit func(*x509.Certificate)) *staticSource {
	w.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, w.pki.Intermediate, key.Public(), w.pki.IntermediateKey)
	if err != nil {
		w.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		w.t.Fatal(err)
	}
	return &staticSource{cert: tls.Certificate{Certificate: [][]byte{der, w.pki.Intermediate.Raw}, PrivateKey: key, Leaf: leaf},
		roots: []*x509.Certificate{w.pki.Root}}
}

// TestRuleNamesKeepTheirKind: a rule's IP address or SPIFFE ID is matched
// only with a SAN of that kind, over real connections through the proxy;
// a DNS SAN that reads like either is refused at the handshake.
func TestRuleNamesKeepTheirKind(t *testing.T) {
	w := newWorld(t)
	p, _ := w.proxy("/proxy", inbound("in", w.backend.URL, &Rule{IDs: []string{"127.0.0.1", "spiffe://example.org/admin"}}))
	admin, _ := url.Parse("spiffe://example.org/admin")
	tests := []struct {
		name string
		src  *staticSource
		want int // 0: the handshake is refused
	}{
		{"IP SAN", w.craftedSource(func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }), 200},
		{"SPIFFE ID", w.craftedSource(func(c *x509.Certificate) { c.URIs = []*url.URL{admin} }), 200},
		{"DNS SAN reading the IP", w.craftedSource(func(c *x509.Certificate) { c.DNSNames = []string{"127.0.0.1"} }), 0},
		{"DNS SAN reading the SPIFFE ID", w.craftedSource(func(c *x509.Certificate) { c.DNSNames = []string{"spiffe://example.org/admin"} }), 0},
		{"DNS SAN", w.craftedSource(func(c *x509.Certificate) { c.DNSNames = []string{"admin.example.org"} }), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, body, _ := get(t, w.clientWith(tt.src, false), addrOf(p, "in"), "/", nil); code != tt.want {
				t.Fatalf("status %d (%s), want %d", code, body, tt.want)
			}
		})
	}
	// The compiled rule itself, given identities no certificate can carry.
	allow, _ := compileRules(inbound("in", "http://x", &Rule{IDs: []string{"127.0.0.1", "spiffe://example.org/admin"}})).forPath("/")
	for _, id := range []identity.Identity{{DNS: []string{"127.0.0.1"}}, {DNS: []string{"spiffe://example.org/admin"}}} {
		if err := allow(id, nil); err == nil {
			t.Errorf("the rule allows %v", id.DNS)
		}
	}
}

// TestRevokedPeersLoseLiveConnections: clients holding a keep-alive
// HTTP/1.1 or HTTP/2 connection through the proxy, and an upstream behind
// an outbound listener, are cut off as soon as the revocation feed's Set
// says so, not at their next handshake.
func TestRevokedPeersLoseLiveConnections(t *testing.T) {
	w := newWorld(t)
	set := &revocation.Set{}
	var seq int64
	revoke := func(c *x509.Certificate) {
		seq++
		set.Apply(revocation.Event{Seq: seq, Kind: revocation.KindRevoked, Serial: c.SerialNumber.Text(16)})
	}
	p, _ := w.proxyWith("/proxy", set, inbound("in", w.backend.URL, &Rule{TrustDomains: []string{"example.org"}}))
	addr := addrOf(p, "in")

	// HTTP/1.1 by hand, so the test sees the proxy close the connection.
	h1Src := w.source("/billing/h1")
	tc, err := mtls.ClientConfig(mtls.Options{Source: h1Src, Authorize: mtls.AuthorizeIDs("spiffe://example.org/proxy")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "GET /one HTTP/1.1\r\nHost: proxy\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h1Closed := make(chan error, 1)
	go func() { _, err := br.ReadByte(); h1Closed <- err }()

	h2Src := w.source("/billing/h2")
	h2 := w.clientWith(h2Src, true)
	if code, body, resp := get(t, h2, addr, "/two", nil); code != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 request: %d %s", code, body)
	}

	revoke(h1Src.cert.Leaf)
	select {
	case err := <-h1Closed:
		if err == nil {
			t.Fatal("the proxy sent bytes nobody asked for")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked HTTP/1.1 client kept its connection")
	}
	revoke(h2Src.cert.Leaf)
	if code, body, _ := get(t, h2, addr, "/three", nil); code == 200 {
		t.Fatalf("the revoked HTTP/2 client got %d %s", code, body)
	}
	if got := len(w.backend.requests()); got != 2 {
		t.Errorf("the backend saw %d requests, want the 2 made before the revocations", got)
	}

	// Outbound: the upstream is revoked while the proxy holds a kept-alive
	// connection to it.
	upSrc := w.source("/ledger/api")
	upTLS, err := mtls.ServerConfig(mtls.Options{Source: upSrc, Authorize: mtls.AuthorizeIDs("spiffe://example.org/legacy/app")})
	if err != nil {
		t.Fatal(err)
	}
	upClosed := make(chan struct{}, 4)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "ledger") }))
	up.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			upClosed <- struct{}{}
		}
	}
	up.Listener = tls.NewListener(up.Listener, upTLS)
	up.Start()
	defer up.Close()
	outSet := &revocation.Set{}
	out, _ := w.proxyWith("/legacy/app", outSet, ListenerConfig{Name: "out", Mode: Outbound, Listen: "127.0.0.1:0",
		Upstream: "https://" + up.Listener.Addr().String(), Expect: &Rule{IDs: []string{"spiffe://example.org/ledger/api"}}})
	resp, err = http.Get("http://" + addrOf(out, "out") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("outbound before the revocation: %s", resp.Status)
	}
	outSet.Apply(revocation.Event{Seq: 1, Kind: revocation.KindRevoked, Serial: upSrc.cert.Leaf.SerialNumber.Text(16)})
	select {
	case <-upClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy kept its connection to the revoked upstream")
	}
	resp, err = http.Get("http://" + addrOf(out, "out") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("outbound after the revocation: %s, want 502", resp.Status)
	}
}
