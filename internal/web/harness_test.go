package web_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"log/slog"
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
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/ocsp"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/web"
	"github.com/mica-pki/mica/revocation"
)

// Admin2 is the fixture's second administrator, who approves what the
// first asks.
const Admin2 = "spiffe://example.org/mica/admin/admin2"

// harness is a server as `mica serve` wires it, in process: the real
// authority on SQLite with a governance part (revoking a certificate of
// profile wide, or granting a role, needs one more admin), the audit log,
// the metrics registry with the server's gauges, and the REST API and the
// console on one TLS listener whose certificate is issued by the authority
// for localhost and 127.0.0.1.
type harness struct {
	t        testing.TB
	crl      *crl.Service
	ocsp     *ocsp.Responder
	ocspURL  string // the OCSP responder, on plain HTTP
	f        *authoritytest.Fixture
	console  *web.Console
	srv      *httptest.Server
	url      string // https://127.0.0.1:port
	cert     *x509.Certificate
	tlsCert  tls.Certificate
	admin2   authoritytest.Cred
	registry *prometheus.Registry
	// revoked receives the serial of each revocation once the OCSP
	// responder has re-signed its answers, for a test to wait on.
	revoked chan string
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessOn(t, nil)
}

// newHarnessOn is newHarness on a store the test opened; nil for a new
// SQLite store.
func newHarnessOn(t testing.TB, st store.Store) *harness {
	t.Helper()
	pc := harnessPolicy()
	eng, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range pc.Profiles {
		names = append(names, n)
	}
	access, err := authority.CompileAccess(authority.Governance{
		Admins: map[string]authority.RoleList{authoritytest.AdminID: {"admin"}, authoritytest.OperatorID: {"operator"},
			authoritytest.AuditorID: {"auditor"}, Admin2: {"admin"}},
		Approvals: []authority.ApprovalRule{{Action: authority.ActCertRevoke, Profiles: []string{"wide"}, Required: 1, Approvers: authority.RoleAdmin},
			{Action: authority.ActRoleGrant, Required: 1, Approvers: authority.RoleAdmin}},
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
	var hub *feed.Hub // set before any request: revocations poke it
	adjust := func(c *authority.Config) {
		c.Policy = eng
		c.Access = access
		// Policy versions a test puts in the database all stand for the
		// harness's policy: what the console shows of them is their
		// record, not their content.
		c.CompilePolicy = func([]byte) (authority.CompiledPolicy, error) {
			return authority.CompiledPolicy{Policy: eng, Access: access}, nil
		}
		c.Observer = metrics
		if alog, err = auditlog.New(auditlog.Config{Store: c.Store.(auditlog.Store), Signer: signer}); err != nil {
			t.Fatal(err)
		}
		c.Audit = alog
		c.OnRevocation = func() { hub.Changed() }
	}
	var f *authoritytest.Fixture
	if st == nil {
		f = authoritytest.NewWith(t, adjust)
	} else {
		f = authoritytest.NewOn(t, st, adjust)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &harness{t: t, f: f, registry: reg, revoked: make(chan string, 64)}
	h.revocationOutputs(ctx, &hub)
	if _, err := telemetry.NewServerMetrics(reg, telemetry.Sources{
		Inventory: f.Store.CertificatesByExpiry, Audit: alog.Status, Profiles: names,
		CAs: func() map[string]*x509.Certificate {
			return map[string]*x509.Certificate{"root": f.PKI.Root, "intermediate": f.PKI.Intermediate}
		},
		CRL: func() (time.Time, time.Time, int, bool) {
			c := h.crl.Current()
			if c == nil {
				return time.Time{}, time.Time{}, 0, false
			}
			return c.ThisUpdate, c.NextUpdate, c.Entries, true
		},
		OCSP: h.ocsp.CacheStats, Feed: hub.Stats,
	}); err != nil {
		t.Fatal(err)
	}
	go alog.Run(ctx)
	h.admin2 = f.IssueCred(t, authority.ProfileAdmin, Admin2)
	h.console, err = web.New(web.Config{Authority: f.Authority, TrustDomain: "example.org", Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	go h.console.Run(ctx)
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
	// Chromium opens connections it does not use; their EOFs are noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
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

// harnessPolicy is the fixture's policy with the profiles of a fleet
// (see load_test.go): mesh, db, batch and web next to service and wide.
func harnessPolicy() policy.Config {
	pc := authoritytest.PolicyConfig()
	day := duration.Duration(24 * time.Hour)
	for name, p := range map[string]policy.ProfileConfig{
		"mesh":  {SPIFFE: []string{"/ns/*/sa/*"}, MaxTTL: day},
		"db":    {SPIFFE: []string{"/db/*"}, MaxTTL: 60 * day},
		"batch": {SPIFFE: []string{"/batch/*"}, MaxTTL: 14 * day},
		"web":   {DNS: []string{"*.svc.example.org"}, MaxTTL: 90 * day},
	} {
		pc.Profiles[name] = p
	}
	return pc
}

// testWriter sends the console's warnings and errors to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// revocationOutputs wires the CRL, the OCSP responder and the push feed
// as serve does: the feed follows the store and tells the other two.
func (h *harness) revocationOutputs(ctx context.Context, hub **feed.Hub) {
	t, f := h.t, h.f
	issuerID := authority.Fingerprint(f.PKI.Intermediate.Raw)
	var err error
	h.crl, err = crl.New(crl.Config{Source: f.Store.(crl.Source), Issuer: f.PKI.Intermediate, Signer: issuance.NewCRLSigner(f.PKI.Intermediate, f.PKI.IntermediateKey), IssuerID: issuerID})
	if err != nil {
		t.Fatal(err)
	}
	// The responder's certificate is issued by the authority under the
	// reserved OCSP profile, as the server does it.
	responder := func(ctx context.Context, pub crypto.PublicKey) (*x509.Certificate, error) {
		id, err := identity.Parse("spiffe://example.org" + authority.OCSPPathPrefix + hex.EncodeToString(f.PKI.Intermediate.SubjectKeyId))
		if err != nil {
			return nil, err
		}
		iss, err := f.Authority.IssueOCSPResponder(ctx, issuerID, id, pub)
		if err != nil {
			return nil, err
		}
		return iss.Certificate, nil
	}
	h.ocsp, err = ocsp.New(ocsp.Config{Source: f.Store, Issuer: f.PKI.Intermediate, IssuerID: issuerID, Responder: responder})
	if err != nil {
		t.Fatal(err)
	}
	*hub, err = feed.New(feed.Config{Source: f.Store, OnEvent: func(e revocation.Event) {
		if e.Kind == revocation.KindRevoked {
			h.crl.Changed()
			h.ocsp.Changed(context.WithoutCancel(ctx), e.Serial)
			select {
			case h.revoked <- e.Serial:
			default: // nobody is waiting for this many
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (*hub).Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.crl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, run := range []func(context.Context) error{(*hub).Run, h.crl.Run, h.ocsp.Run} {
		go run(ctx)
	}
	srv := httptest.NewServer(h.ocsp.Handler())
	t.Cleanup(srv.Close)
	h.ocspURL = srv.URL
}
