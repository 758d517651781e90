package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/enginetest"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

// caller is a raw HTTPS client with or without a client certificate, so
// that tests can send what the SDK never would.
type caller struct {
	name string
	hc   *http.Client
}

func callers(t *testing.T, srv *httptest.Server, f *authoritytest.Fixture) ([]caller, string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	mk := func(name string, cred *tls.Certificate) caller {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if cred != nil {
			cfg.Certificates = []tls.Certificate{*cred}
		}
		return caller{name: name, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
	}
	admin := authoritytest.Cred{Issued: f.AdminIssued, Key: f.AdminKey}
	workload := f.EnrollCred(t, "service", "spiffe://example.org/billing/api")
	return []caller{
		mk("anonymous", nil),
		mk("workload", workload.TLS()),
		mk("auditor", f.AuditorCred.TLS()),
		mk("operator", f.OperatorCred.TLS()),
		mk("admin", admin.TLS()),
	}, workload.Issued.Record.Serial
}

func (c caller) do(t *testing.T, method, url, body string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, url, c.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, b
}

// The full role × endpoint matrix over HTTPS on both engines: every
// authenticated endpoint, as each kind of caller, answers exactly as the
// authorize table says, and a refusal is one problem document.
func TestEndpointRoleMatrix(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		signer, err := auditlog.NewSigner("example.org/mica/audit", key)
		if err != nil {
			t.Fatal(err)
		}
		f := authoritytest.NewOn(t, st, func(cfg *authority.Config) {
			l, err := auditlog.New(auditlog.Config{Store: st.(auditlog.Store), Signer: signer})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Audit = l
		})
		srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		cs, workloadSerial := callers(t, srv, f)
		fresh := func() string { return f.Issue(t, "spiffe://example.org/billing/victim").Record.Serial }
		type endpoint struct {
			method, path string
			body         func() string
			// allowed names the callers answered 2xx; everyone else gets
			// 401 (anonymous) or 403.
			allowed string
		}
		all := "workload auditor operator admin"
		eps := []endpoint{
			{"POST", "/v1/tokens", func() string { return `{"identity":"spiffe://example.org/billing/t","profile":"service"}` }, "operator admin"},
			{"POST", "/v1/tokens", func() string { return `{"identity":"spiffe://example.org/mica/admin/x","profile":"mica-admin"}` }, "admin"},
			{"POST", "/v1/certificates/renew", func() string { return `{"csr":` + jsonString(csrPEM(t)) + `}` }, all},
			{"GET", "/v1/certificates", nil, "auditor operator admin"},
			{"GET", "/v1/certificates/" + workloadSerial, nil, all},
			{"GET", "/v1/certificates/{fresh}", nil, "auditor operator admin"},
			{"POST", "/v1/certificates/{fresh}/revoke", func() string { return `{"reason":"keyCompromise"}` }, "admin"},
			{"POST", "/v1/certificates/revoke", func() string { return `{"identity":"spiffe://example.org/billing/victim","reason":"superseded"}` }, "admin"},
			{"GET", "/v1/server/stats", nil, "admin"},
			{"POST", "/v1/jwt-svids", func() string { return `{"audience":["db"]}` }, "workload auditor operator admin"},
			{"GET", "/v1/audit/checkpoint", nil, "auditor operator admin"},
			{"GET", "/v1/audit/checkpoints", nil, "auditor operator admin"},
			{"GET", "/v1/audit/proof/" + workloadSerial, nil, all},
			{"GET", "/v1/audit/proof/{fresh}", nil, "auditor operator admin"},
			{"GET", "/v1/audit/leaves", nil, "auditor operator admin"},
			{"GET", "/v1/audit/events", nil, "auditor operator admin"},
			{"GET", "/v1/audit/consistency?size1=1&size2=1", nil, "auditor operator admin"},
			{"POST", "/v1/identities/deny", func() string { return `{"identity":"spiffe://example.org/billing/denied-` + fresh() + `"}` }, "admin"},
			{"GET", "/v1/identities/denied", nil, "auditor operator admin"},
			{"GET", "/v1/reports/expiring", nil, "auditor operator admin"},
			{"POST", "/v1/console/links", func() string { return `{}` }, "auditor operator admin"},
		}
		for _, ep := range eps {
			for _, c := range cs {
				path := strings.ReplaceAll(ep.path, "{fresh}", fresh())
				body := ""
				if ep.body != nil {
					body = ep.body()
				}
				status, h, b := c.do(t, ep.method, srv.URL+path, body, nil)
				want := strings.Contains(" "+ep.allowed+" ", " "+c.name+" ")
				switch {
				case want && (status < 200 || status > 299):
					t.Errorf("%s %s as %s: %d %s, want 2xx", ep.method, ep.path, c.name, status, b)
				case !want && c.name == "anonymous" && status != http.StatusUnauthorized:
					t.Errorf("%s %s anonymous: %d, want 401", ep.method, ep.path, status)
				case !want && c.name != "anonymous" && status != http.StatusForbidden:
					t.Errorf("%s %s as %s: %d %s, want 403", ep.method, ep.path, c.name, status, b)
				case !want:
					checkProblem(t, h, b)
				}
			}
		}
	})
}

// Hostile requests: every one is refused with a 4xx problem document (never
// a 500) and changes nothing.
func TestHostileRequestsChangeNothing(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		f := authoritytest.NewOn(t, st, nil)
		srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		cs, _ := callers(t, srv, f)
		anon, workload, admin := cs[0], cs[1], cs[4]
		ctx := context.Background()
		tok := func(id, profile string) string {
			return "Bearer " + f.Token(t, authority.TokenRequest{Identity: id, Profile: profile})
		}
		goodCSR := jsonString(csrPEM(t))
		cases := []struct {
			name         string
			c            caller
			method, path string
			body         string
			header       map[string]string
			status       int
		}{
			{"duplicate key", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a","identity":"spiffe://example.org/mica/admin/x","profile":"service"}`, nil, 400},
			{"duplicate key by case", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a","Identity":"spiffe://example.org/billing/b","profile":"service"}`, nil, 400},
			{"unknown field", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a","profile":"service","role":"admin"}`, nil, 400},
			{"trailing data", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a","profile":"service"}{}`, nil, 400},
			{"not JSON", admin, "POST", "/v1/tokens", `identity=x`, nil, 400},
			{"wrong content type", admin, "POST", "/v1/tokens", `{}`, map[string]string{"Content-Type": "text/plain"}, 415},
			{"body too large", admin, "POST", "/v1/tokens", `{"identity":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, nil, 413},
			{"deeply nested", admin, "POST", "/v1/tokens", strings.Repeat("[", 1000) + strings.Repeat("]", 1000), nil, 400},
			{"reserved name under service", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/mica/admin/x","profile":"service"}`, nil, 403},
			{"server's own address", admin, "POST", "/v1/tokens", `{"identity":"127.0.0.1","profile":"wide"}`, nil, 403},
			{"invalid A-label", admin, "POST", "/v1/tokens", `{"identity":"xn--a.example.org","profile":"wide"}`, nil, 400},
			{"IP text as a DNS name", admin, "POST", "/v1/tokens", `{"identity":"127.0.0.1.","profile":"wide"}`, nil, 400},
			{"two SPIFFE IDs", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a,spiffe://example.org/billing/b","profile":"service"}`, nil, 400},
			{"token TTL too long", admin, "POST", "/v1/tokens", `{"identity":"spiffe://example.org/billing/a","profile":"service","ttl":"2d"}`, nil, 400},
			{"no token", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `}`, nil, 401},
			{"garbage token", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `}`, map[string]string{"Authorization": "Bearer a.b.c"}, 401},
			{"alg none token", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `}`, map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}, 401},
			{"garbage CSR", anon, "POST", "/v1/certificates", `{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 400},
			{"two PEM blocks", anon, "POST", "/v1/certificates", `{"csr":` + jsonString(csrPEM(t)+csrPEM(t)) + `}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 400},
			{"CSR for another identity", anon, "POST", "/v1/certificates", `{"csr":` + jsonString(csrPEM(t, "spiffe://example.org/billing/other")) + `}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 403},
			{"1ns TTL", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `,"ttl":"1ns"}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 403},
			{"10ms TTL", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `,"ttl":"10ms"}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 403},
			{"negative TTL", anon, "POST", "/v1/certificates", `{"csr":` + goodCSR + `,"ttl":"-1h"}`, map[string]string{"Authorization": tok("spiffe://example.org/billing/g", "service")}, 400},
			{"renew without a certificate", anon, "POST", "/v1/certificates/renew", `{"csr":` + goodCSR + `}`, nil, 401},
			{"renew into another identity", workload, "POST", "/v1/certificates/renew", `{"csr":` + jsonString(csrPEM(t, "spiffe://example.org/mica/admin/root")) + `}`, nil, 403},
			{"bad serial", admin, "GET", "/v1/certificates/zz", "", nil, 400},
			{"serial too long", admin, "GET", "/v1/certificates/" + strings.Repeat("a", 80), "", nil, 400},
			{"two bad query parameters", admin, "GET", "/v1/audit/leaves?start=-1&limit=x", "", nil, 400},
			{"unknown endpoint", admin, "GET", "/v1/nope", "", nil, 404},
			{"deny two names at once", admin, "POST", "/v1/identities/deny", `{"identity":"spiffe://example.org/billing/a,a.example.org"}`, nil, 400},
			{"revoke with a bad reason", admin, "POST", "/v1/certificates/revoke", `{"identity":"spiffe://example.org/billing/a","reason":"because"}`, nil, 400},
		}
		before, _ := st.CountCertificates(ctx, store.Filter{})
		denied, _ := st.DeniedIdentities(ctx)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, h, b := tc.c.do(t, tc.method, srv.URL+tc.path, tc.body, tc.header)
				if status != tc.status {
					t.Errorf("status %d, want %d: %s", status, tc.status, b)
				}
				checkProblem(t, h, b)
			})
		}
		after, _ := st.CountCertificates(ctx, store.Filter{})
		deniedAfter, _ := st.DeniedIdentities(ctx)
		if after != before || len(deniedAfter) != len(denied) {
			t.Fatalf("hostile requests changed the store: certificates %d → %d, denied %d → %d", before, after, len(denied), len(deniedAfter))
		}
	})
}

// checkProblem requires exactly one problem+json document.
func checkProblem(t *testing.T, h http.Header, body []byte) {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := dec.Decode(&p); err != nil || p.Type == "" || p.Detail == "" || p.Status == 0 {
		t.Errorf("not a problem document: %s (%v)", body, err)
	}
	if dec.More() {
		t.Errorf("more than one document in the body: %s", body)
	}
	if p.Status >= 500 {
		t.Errorf("a server error for bad input: %s", body)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
