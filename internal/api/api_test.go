package api_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
)

// serve runs the API over real TLS 1.3 with client certificates requested,
// as `mica serve` does, and returns an anonymous and an admin client.
func serve(t *testing.T, f *authoritytest.Fixture) (srv *httptest.Server, anon, admin *client.Client) {
	t.Helper()
	srv = httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
	srv.Config.ConnContext = api.ConnContext
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	var err error
	if anon, err = client.New(client.Config{Server: srv.URL, Roots: roots}); err != nil {
		t.Fatal(err)
	}
	cred := tls.Certificate{Certificate: [][]byte{f.AdminIssued.Certificate.Raw, f.PKI.Intermediate.Raw}, PrivateKey: f.AdminKey}
	if admin, err = client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: &cred}); err != nil {
		t.Fatal(err)
	}
	return srv, anon, admin
}

func csrPEM(t *testing.T, uris ...string) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: authoritytest.CSR(t, uris...)}))
}

func TestEnrollListRenewOverHTTPS(t *testing.T) {
	f := authoritytest.New(t)
	_, anon, admin := serve(t, f)
	ctx := context.Background()
	tok, err := admin.CreateToken(ctx, client.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service", TTL: "5m"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := anon.Enroll(ctx, tok.Token, client.CertificateRequest{CSR: csrPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Identity != "spiffe://example.org/billing/api" || resp.EventSeq == 0 || !strings.Contains(resp.Chain, "CERTIFICATE") {
		t.Fatalf("enroll response %+v", resp)
	}
	certs, err := admin.ListCertificates(ctx, client.ListFilter{Identity: "spiffe://example.org/billing/api"})
	if err != nil || len(certs) != 1 || certs[0].Serial != resp.Serial {
		t.Fatalf("list = %+v, %v", certs, err)
	}
	if _, err := anon.ListCertificates(ctx, client.ListFilter{}); problemSlug(err) != "unauthenticated" {
		t.Errorf("anonymous list: %v", err)
	}
	b, err := anon.Bundle(ctx)
	if err != nil || len(b.Roots) != 1 || len(b.Intermediates) != 1 || b.TrustDomain != "example.org" {
		t.Errorf("bundle = %+v, %v", b, err)
	}
}

func problemSlug(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Slug()
	}
	return "not a problem: " + errorString(err)
}

func errorString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestProblems(t *testing.T) {
	f := authoritytest.New(t)
	srv, _, _ := serve(t, f)
	hc := srv.Client()
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
		slug                            string
	}{
		{"unknown endpoint", "GET", "/v2/nothing", "", "", 404, "not-found"},
		{"wrong media type", "POST", "/v1/certificates", "text/plain", "x", 415, "unsupported-media-type"},
		{"no token", "POST", "/v1/certificates", "application/json", `{"csr":""}`, 401, "token-missing"},
		{"trailing data", "POST", "/v1/tokens", "application/json", `{} {}`, 401, "unauthenticated"},
		{"bad serial", "GET", "/v1/certificates/xyz", "", "", 401, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.name == "wrong media type" {
				req.Header.Set("Authorization", "Bearer x")
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d, content type %q; want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), tt.status)
			}
			var p client.Problem
			if err := jsonDecode(resp, &p); err != nil || p.Slug() != tt.slug || p.Status != tt.status {
				t.Fatalf("problem %+v (%v), want %q", p, err, tt.slug)
			}
		})
	}
}

func TestInternalErrorsAreNotLeaked(t *testing.T) {
	f := authoritytest.New(t)
	_, anon, admin := serve(t, f)
	ctx := context.Background()
	tok, err := admin.CreateToken(ctx, client.TokenRequest{Identity: "spiffe://example.org/billing/api", Profile: "service"})
	if err != nil {
		t.Fatal(err)
	}
	f.Store.Close() // the database is gone: a server fault, not the caller's
	_, err = anon.Enroll(ctx, tok.Token, client.CertificateRequest{CSR: csrPEM(t)})
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != 500 || p.Slug() != "internal" {
		t.Fatalf("err = %v, want a 500 internal problem", err)
	}
	// The API cannot know whether a certificate was committed when the
	// store failed, so it must not claim either way; the log says.
	if strings.Contains(strings.ToLower(p.Detail), "sql") || strings.Contains(p.Detail, "nothing was issued") || !strings.Contains(p.Detail, "server log") {
		t.Errorf("internal detail leaks or misleads: %q", p.Detail)
	}
}

func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestRenewOutsideValidity: a certificate renews only while it is valid by
// the server's clock (injected here, so the test waits for nothing); past
// its end, or before its start, the refusal says which and what to do, and
// nothing is issued.
func TestRenewOutsideValidity(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	f := authoritytest.NewWith(t, func(c *authority.Config) {
		c.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	setClock := func(at time.Time) { mu.Lock(); defer mu.Unlock(); now = at }
	srv, _, admin := serve(t, f)
	ctx := context.Background()
	cred := f.EnrollCred(t, "service", "spiffe://example.org/billing/expiring")
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	holder, err := client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: cred.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	leaf := cred.Issued.Certificate
	tests := []struct {
		name       string
		at         time.Time
		wantDetail string
	}{
		{"Expired", leaf.NotAfter.Add(time.Minute), "expired 1m0s ago and cannot renew: enroll again"},
		{"NotYetValid", leaf.NotBefore.Add(-time.Minute), "is not valid until"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := admin.ListCertificates(ctx, client.ListFilter{})
			if err != nil {
				t.Fatal(err)
			}
			setClock(tc.at)
			_, err = holder.Renew(ctx, client.CertificateRequest{CSR: csrPEM(t)})
			setClock(time.Now())
			var p *client.Problem
			if !errors.As(err, &p) || p.Slug() != "certificate-expired" || p.Status != http.StatusUnauthorized || !strings.Contains(p.Detail, tc.wantDetail) {
				t.Fatalf("renew = %v, want a 401 certificate-expired problem saying %q", err, tc.wantDetail)
			}
			after, err := admin.ListCertificates(ctx, client.ListFilter{})
			if err != nil || len(after) != len(before) {
				t.Errorf("%d certificates before the refused renewal, %d after (%v)", len(before), len(after), err)
			}
		})
	}
	// Back inside its validity, the same certificate renews.
	if _, err := holder.Renew(ctx, client.CertificateRequest{CSR: csrPEM(t)}); err != nil {
		t.Errorf("renew inside the validity: %v", err)
	}
}

// TestRenewOverHTTPS renews over one kept-alive connection: with a new key
// (a CSR) and keeping the key (no CSR), and finds the certificate's status
// read again on every request although its chain is verified once per
// connection.
func TestRenewOverHTTPS(t *testing.T) {
	f := authoritytest.New(t)
	srv, anon, admin := serve(t, f)
	ctx := context.Background()
	cred := f.EnrollCred(t, "service", "spiffe://example.org/billing/api")
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	holder, err := client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: cred.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	withCSR, err := holder.Renew(ctx, client.CertificateRequest{CSR: csrPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := holder.Renew(ctx, client.CertificateRequest{KeepKey: true})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(kept.Certificate))
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(cred.Key.Public()) {
		t.Error("keep_key certified another key than the current certificate's")
	}
	if kept.Identity != "spiffe://example.org/billing/api" || kept.Serial == withCSR.Serial {
		t.Errorf("renewal keeping the key: %+v", kept)
	}

	for _, tt := range []struct {
		name string
		call func() error
		slug string
	}{
		{"keep_key and a CSR", func() error {
			_, err := holder.Renew(ctx, client.CertificateRequest{KeepKey: true, CSR: csrPEM(t)})
			return err
		}, "invalid-request"},
		{"neither", func() error { _, err := holder.Renew(ctx, client.CertificateRequest{}); return err }, "bad-csr"},
		{"keep_key to enroll", func() error {
			tok, err := admin.CreateToken(ctx, client.TokenRequest{Identity: "spiffe://example.org/billing/new", Profile: "service"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = anon.Enroll(ctx, tok.Token, client.CertificateRequest{KeepKey: true})
			return err
		}, "invalid-request"},
	} {
		if slug := problemSlug(tt.call()); slug != tt.slug {
			t.Errorf("%s: %s, want %s", tt.name, slug, tt.slug)
		}
	}

	if _, err := admin.Revoke(ctx, cred.Issued.Record.Serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Renew(ctx, client.CertificateRequest{KeepKey: true}); problemSlug(err) != "certificate-revoked" {
		t.Errorf("renewal with a certificate revoked since the connection's first request: %v", err)
	}
}
