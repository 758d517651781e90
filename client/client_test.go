package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/testpki"
)

// server is the real API with a real authority and store, over TLS 1.3 on
// loopback, with a server certificate issued under the fixture's root, as
// `mica serve` runs it.
type server struct {
	f     *authoritytest.Fixture
	url   string
	roots *x509.CertPool
	admin *client.Client
}

func serve(t *testing.T, adjust func(*authority.Config)) *server {
	t.Helper()
	f := authoritytest.NewWith(t, adjust)
	return serveFixture(t, f)
}

func serveFixture(t *testing.T, f *authoritytest.Fixture) *server {
	t.Helper()
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert,
		Certificates: []tls.Certificate{serverLeaf(t, f.PKI)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s := &server{f: f, url: srv.URL, roots: f.PKI.Roots()}
	adminCred := tls.Certificate{Certificate: [][]byte{f.AdminIssued.Certificate.Raw, f.PKI.Intermediate.Raw}, PrivateKey: f.AdminKey}
	s.admin = s.newClient(t, &adminCred)
	return s
}

// serverLeaf is a serverAuth certificate for 127.0.0.1 under pki's root.
func serverLeaf(t *testing.T, pki *testpki.PKI) tls.Certificate {
	t.Helper()
	id, err := identity.Parse("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return pki.Leaf(t, id, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth)).TLS()
}

func (s *server) newClient(t *testing.T, cred *tls.Certificate) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: s.url, Roots: s.roots, Certificate: cred})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (s *server) token(t *testing.T, id string) string {
	t.Helper()
	tok, err := s.admin.CreateToken(t.Context(), client.TokenRequest{Identity: id, Profile: "service"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// csr makes a key and a CSR for it.
func csr(t *testing.T) (*ecdsa.PrivateKey, client.CertificateRequest) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der := authoritytest.CSRWithKey(t, key)
	return key, client.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
}

func slug(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Slug()
	}
	return ""
}

// TestBootstrap: a machine with only a token finds the root it pins, over
// a connection that is checked against it, and enrolls; wrong servers and
// wrong tokens are refused with what to do.
func TestBootstrap(t *testing.T) {
	s := serve(t, nil)
	ctx := t.Context()
	tok := s.token(t, "spiffe://example.org/billing/api")
	c, err := client.Bootstrap(ctx, client.Config{Server: s.url}, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, req := csr(t)
	resp, err := c.Enroll(ctx, tok, req)
	if err != nil {
		t.Fatalf("enrolling through the bootstrapped client: %v", err)
	}
	if resp.Identity != "spiffe://example.org/billing/api" {
		t.Errorf("enrolled %s", resp.Identity)
	}

	// An impostor with its own CA that copies the real root into its
	// bundle: the pin matches, its TLS certificate does not chain to it.
	other := testpki.New(t, "example.org")
	impostor := func(bundleRoot *x509.Certificate) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(client.Bundle{TrustDomain: "example.org",
				Roots: []string{string(credential.EncodeCertificates([]*x509.Certificate{bundleRoot}))}})
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverLeaf(t, other)}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	tests := []struct {
		name   string
		server string
		token  string
		roots  *x509.CertPool
		want   string
	}{
		{"impostor copying the pinned root", impostor(s.f.PKI.Root), tok, nil, "does not chain"},
		{"impostor with its own root", impostor(other.Root), tok, nil, "does not hold the root the token pins"},
		{"not a token", s.url, "hello", nil, "not a mica enrollment token"},
		{"a token without a pin", s.url, "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + ".sig", nil, "pins no root"},
		{"a pin that is not SHA-256", s.url, "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"root_fp":"abcd"}`)) + ".sig", nil, "not a hex SHA-256"},
		{"roots given", s.url, tok, s.roots, "leave Config.Roots empty"},
		{"plain http", strings.Replace(s.url, "https", "http", 1), tok, nil, "https://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Bootstrap(ctx, client.Config{Server: tt.server, Roots: tt.roots}, tt.token)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "mica: ") {
				t.Fatalf("Bootstrap = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

// TestBootstrappedClientVerifies: the client Bootstrap returns trusts the
// pinned root only, on every new connection: once the server presents a
// certificate from elsewhere, requests fail.
func TestBootstrappedClientVerifies(t *testing.T) {
	f := authoritytest.New(t)
	other := testpki.New(t, "example.org")
	var useOther atomic.Bool
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	good, bad := serverLeaf(t, f.PKI), serverLeaf(t, other)
	// GetConfigForClient, because httptest puts a certificate of its own
	// in Certificates, which wins over GetCertificate without SNI.
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert := good
		if useOther.Load() {
			cert = bad
		}
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	tok, err := f.Authority.CreateToken(t.Context(), f.Admin, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Bootstrap(t.Context(), client.Config{Server: srv.URL}, tok.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Bundle(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	useOther.Store(true)
	srv.CloseClientConnections()
	if _, err := c.Bundle(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server certificate from another CA was accepted after bootstrap: %v", err)
	}
}

// TestEnrollRenewRevoke goes through a holder's life over the real API:
// enroll, renew over mTLS (the credential swapped under the client), the
// admin's reads and revocation, and the refusals a holder meets.
func TestEnrollRenewRevoke(t *testing.T) {
	s := serve(t, nil)
	ctx := t.Context()
	id := "spiffe://example.org/billing/api"
	anon := s.newClient(t, nil)
	tok := s.token(t, id)
	key, req := csr(t)
	resp, err := anon.Enroll(ctx, tok, req)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := credential.ParseCertificates([]byte(resp.Certificate + resp.Chain))
	if err != nil || len(chain) != 2 || resp.Serial != chain[0].SerialNumber.Text(16) || resp.LeafIndex < 0 {
		t.Fatalf("enrollment response: %+v, %v", resp, err)
	}
	// A retry with the same token and key (the response was lost) gets the
	// same certificate; another key is a replay.
	if again, err := anon.Enroll(ctx, tok, req); err != nil || again.Serial != resp.Serial {
		t.Fatalf("retried enrollment with the same key: %+v, %v; want certificate %s again", again, err, resp.Serial)
	}
	_, other := csr(t)
	if _, err := anon.Enroll(ctx, tok, other); slug(err) != "token-replayed" {
		t.Fatalf("second use of a token with another key: %v, want token-replayed", err)
	}
	if _, err := anon.Renew(ctx, req); slug(err) != "unauthenticated" {
		t.Fatalf("renewal without a certificate: %v, want unauthenticated", err)
	}

	current, err := credential.New(chain, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := client.New(client.Config{Server: s.url, Roots: s.roots,
		GetCertificate: func() (*tls.Certificate, error) { return current.TLSCertificate(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	for i := range 2 {
		newKey, req := csr(t)
		renewed, err := holder.Renew(ctx, req)
		if err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		if renewed.Identity != id || renewed.Serial == resp.Serial {
			t.Fatalf("renewal %d: %+v", i, renewed)
		}
		// The server judges the connection's certificate: a new one
		// needs a new connection.
		next, _ := credential.ParseCertificates([]byte(renewed.Certificate + renewed.Chain))
		current, _ = credential.New(next, newKey, nil)
		holder.Close()
	}

	rec, err := s.admin.Certificate(ctx, current.Leaf().SerialNumber.Text(16))
	if err != nil || rec.Identity != id || rec.Status != "active" {
		t.Fatalf("inventory record: %+v, %v", rec, err)
	}
	list, err := s.admin.ListCertificates(ctx, client.ListFilter{Identity: id})
	if err != nil || len(list) != 3 {
		t.Fatalf("inventory of %s: %d records, %v; want 3", id, len(list), err)
	}
	if _, err := anon.ListCertificates(ctx, client.ListFilter{}); slug(err) != "unauthenticated" {
		t.Fatalf("anonymous inventory read: %v", err)
	}
	revoked, err := s.admin.Revoke(ctx, rec.Serial, "keyCompromise")
	if err != nil || revoked.Status != "revoked" || revoked.RevocationReason != "keyCompromise" {
		t.Fatalf("revoke: %+v, %v", revoked, err)
	}
	_, req = csr(t)
	if _, err := holder.Renew(ctx, req); slug(err) != "certificate-revoked" {
		t.Fatalf("renewal with a revoked certificate: %v, want certificate-revoked", err)
	}
	var p *client.Problem
	if err := func() error { _, err := holder.Renew(ctx, req); return err }(); !errors.As(err, &p) ||
		p.Status != http.StatusForbidden && p.Status != http.StatusUnauthorized || !strings.HasPrefix(p.Error(), "mica: ") {
		t.Fatalf("problem: %#v", err)
	}

	if _, err := s.admin.Deny(ctx, id, "test"); err != nil {
		t.Fatal(err)
	}
	denied, err := s.admin.DeniedIdentities(ctx)
	if err != nil || len(denied) != 1 || denied[0].Identity != id {
		t.Fatalf("deny list: %+v, %v", denied, err)
	}
	_, req = csr(t)
	if _, err := anon.Enroll(ctx, s.token(t, id), req); slug(err) != "identity-denied" {
		t.Fatalf("enrolling a denied identity: %v, want identity-denied", err)
	}
	if _, err := s.admin.Allow(ctx, id, "test"); err != nil {
		t.Fatal(err)
	}

	b, err := anon.Bundle(ctx)
	if err != nil || b.TrustDomain != "example.org" || len(b.Roots) != 1 {
		t.Fatalf("bundle: %+v, %v", b, err)
	}
	if jwks, err := anon.JWTBundle(ctx); err != nil || !json.Valid(jwks) {
		t.Fatalf("JWT bundle: %s, %v", jwks, err)
	}
}

// TestRetryAfter: a rate-limited request's problem carries the server's
// Retry-After.
func TestRetryAfter(t *testing.T) {
	s := serve(t, func(cfg *authority.Config) {
		rules, err := limits.Compile(limits.Limits{ProfileLimits: limits.ProfileLimits{PerIdentity: &limits.Bucket{Rate: "1/h", Burst: 1}}},
			limits.Anomalies{}, []string{"service", "mica-admin"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Guard, err = limits.New(limits.Config{Rules: rules, Recorder: cfg.Store, Registerer: prometheus.NewRegistry()}); err != nil {
			t.Fatal(err)
		}
	})
	anon := s.newClient(t, nil)
	var last error
	for range 2 {
		_, req := csr(t)
		_, last = anon.Enroll(t.Context(), s.token(t, "spiffe://example.org/billing/limited"), req)
	}
	var p *client.Problem
	if !errors.As(last, &p) || p.Slug() != "rate-limited" || p.Status != http.StatusTooManyRequests || p.RetryAfter < time.Minute {
		t.Fatalf("second enrollment within the hour: %#v, want rate-limited with a Retry-After", last)
	}
}

// TestPinIsTheRootsSHA256 keeps the client's reading of the token in step
// with the authority's minting: the pin is the hex SHA-256 of the root.
func TestPinIsTheRootsSHA256(t *testing.T) {
	f := authoritytest.New(t)
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service", Source: netip.Addr{}})
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	var claims struct {
		RootFP string `json:"root_fp"`
	}
	json.Unmarshal(payload, &claims)
	sum := sha256.Sum256(f.PKI.Root.Raw)
	if claims.RootFP != hex.EncodeToString(sum[:]) {
		t.Fatalf("root_fp %q is not the root's SHA-256", claims.RootFP)
	}
}

// TestSetRoots: the client verifies the server against the roots of the
// moment, so one that follows the trust bundle keeps connecting when the
// server moves to a new root; it still refuses a root it was not given and
// a certificate for another host.
func TestSetRoots(t *testing.T) {
	f := authoritytest.New(t)
	next := testpki.New(t, "example.org")
	var useNext atomic.Bool
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	cur, moved := serverLeaf(t, f.PKI), serverLeaf(t, next)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert := cur
		if useNext.Load() {
			cert = moved
		}
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	c, err := client.New(client.Config{Server: srv.URL, Roots: f.PKI.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Bundle(t.Context()); err != nil {
		t.Fatal(err)
	}
	useNext.Store(true)
	c.Close()
	srv.CloseClientConnections()
	if _, err := c.Bundle(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server certificate under a root the client was not given was accepted: %v", err)
	}
	c.SetRoots(next.Roots())
	if _, err := c.Bundle(t.Context()); err != nil {
		t.Fatalf("after SetRoots with the server's new root: %v", err)
	}
	// The leaf names 127.0.0.1 only: the same server reached as localhost
	// is refused, so the name check is not lost with crypto/tls's own.
	byName, err := client.New(client.Config{Server: strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), Roots: next.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	defer byName.Close()
	if _, err := byName.Bundle(t.Context()); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("a certificate for 127.0.0.1 was accepted for localhost: %v", err)
	}
}
