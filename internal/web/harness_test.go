package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/web"
)

// Admin2 is the fixture's second administrator, who approves what the
// first asks.
const Admin2 = "spiffe://example.org/mica/admin/admin2"

// harness is a server as `mica serve` wires it, in process: the real
// authority on SQLite with a governance part (revoking a certificate of
// profile wide needs one more admin), the audit log, the metrics registry
// with the server's gauges, and the REST API and the console on one TLS
// listener whose certificate is issued by the authority for localhost and
// 127.0.0.1.
type harness struct {
	t        *testing.T
	f        *authoritytest.Fixture
	console  *web.Console
	srv      *httptest.Server
	url      string // https://127.0.0.1:port
	cert     *x509.Certificate
	tlsCert  tls.Certificate
	admin2   authoritytest.Cred
	registry *prometheus.Registry
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	var names []string
	for n := range authoritytest.PolicyConfig().Profiles {
		names = append(names, n)
	}
	access, err := authority.CompileAccess(authority.Governance{
		Admins: map[string]authority.RoleList{authoritytest.AdminID: {"admin"}, authoritytest.OperatorID: {"operator"},
			authoritytest.AuditorID: {"auditor"}, Admin2: {"admin"}},
		Approvals: []authority.ApprovalRule{{Action: authority.ActCertRevoke, Profiles: []string{"wide"}, Required: 1, Approvers: authority.RoleAdmin}},
	}, "example.org", names)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := telemetry.NewIssuanceMetrics(reg, names)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := auditlog.NewSigner("example.org/mica/audit", key)
	if err != nil {
		t.Fatal(err)
	}
	var alog *auditlog.Log
	f := authoritytest.NewWith(t, func(c *authority.Config) {
		c.Access = access
		c.Observer = metrics
		if alog, err = auditlog.New(auditlog.Config{Store: c.Store.(auditlog.Store), Signer: signer}); err != nil {
			t.Fatal(err)
		}
		c.Audit = alog
	})
	if _, err := telemetry.NewServerMetrics(reg, telemetry.Sources{
		Inventory: f.Store.CertificatesByExpiry, Audit: alog.Status, Profiles: names,
		CAs: map[string]*x509.Certificate{"root": f.PKI.Root, "intermediate": f.PKI.Intermediate},
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go alog.Run(ctx)

	h := &harness{t: t, f: f, registry: reg}
	h.admin2 = f.IssueCred(t, authority.ProfileAdmin, Admin2)
	h.console, err = web.New(web.Config{Authority: f.Authority, TrustDomain: "example.org", Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(web.Prefix, h.console)
	mux.Handle("/", api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	server := f.IssueCred(t, authority.ProfileServer, "localhost,127.0.0.1")
	h.tlsCert, h.cert = *server.TLS(), server.Issued.Certificate
	h.srv = h.serve(mux)
	h.url = h.srv.URL
	return h
}

// serve starts a TLS server with the harness's certificate.
func (h *harness) serve(handler http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert, Certificates: []tls.Certificate{h.tlsCert}}
	srv.StartTLS()
	h.t.Cleanup(srv.Close)
	return srv
}

// as is an API client with a credential.
func (h *harness) as(c authoritytest.Cred) *client.Client {
	h.t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(h.f.PKI.Root)
	cl, err := client.New(client.Config{Server: h.url, Roots: roots, Certificate: c.TLS()})
	if err != nil {
		h.t.Fatal(err)
	}
	return cl
}

// adminCred is the fixture's admin credential.
func (h *harness) adminCred() authoritytest.Cred {
	return authoritytest.Cred{Issued: h.f.AdminIssued, Key: h.f.AdminKey}
}

// link asks the API for a one-time sign-in link with c, as `mica console
// login` does, and returns its full URL.
func (h *harness) link(c authoritytest.Cred) string {
	h.t.Helper()
	l, err := h.as(c).CreateConsoleLink(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return h.url + l.Path
}

// browser is a Go HTTP client with a cookie jar, trusting the harness's
// CA, sending Origin on POSTs as a browser does.
type browser struct {
	h  *harness
	hc *http.Client
}

func (h *harness) newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	roots := x509.NewCertPool()
	roots.AddCert(h.f.PKI.Root)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{h: h, hc: hc}
}

func (b *browser) get(path string) (int, string) {
	b.h.t.Helper()
	resp, err := b.hc.Get(b.url(path))
	if err != nil {
		b.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) url(path string) string {
	if strings.HasPrefix(path, "https://") {
		return path
	}
	return b.h.url + path
}

// post submits a form as a page of origin would.
func (b *browser) post(path, origin string, form url.Values) (*http.Response, string) {
	b.h.t.Helper()
	req, _ := http.NewRequest("POST", b.url(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// signIn opens a link and confirms it, as a person does.
func (b *browser) signIn(link string) {
	b.h.t.Helper()
	status, page := b.get(link)
	if status != http.StatusOK || !strings.Contains(page, `id="signin"`) {
		b.h.t.Fatalf("opening the link: %d\n%s", status, page)
	}
	u, _ := url.Parse(link)
	resp, body := b.post("/ui/signin", b.h.url, url.Values{"link": {u.Query().Get("link")}})
	if resp.StatusCode != http.StatusSeeOther {
		b.h.t.Fatalf("signing in: %d\n%s", resp.StatusCode, body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's token from a page.
func (b *browser) csrf() string {
	b.h.t.Helper()
	_, page := b.get("/ui/")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		b.h.t.Fatalf("no CSRF token on the overview:\n%s", page)
	}
	return m[1]
}

// count is how many events of action the log has.
func (h *harness) count(action store.Action) int {
	h.t.Helper()
	evs, err := h.f.Store.Events(context.Background(), store.EventFilter{Action: action})
	if err != nil {
		h.t.Fatal(err)
	}
	return len(evs)
}

var netipZero netip.Addr
