package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/testpki"
)

// realServer is the real API, authority and store over TLS 1.3 on
// loopback; skew moves the authority's clock.
type realServer struct {
	f    *authoritytest.Fixture
	url  string
	skew atomic.Int64
}

func serveReal(t *testing.T) *realServer {
	t.Helper()
	s := &realServer{}
	s.f = authoritytest.NewWith(t, func(cfg *authority.Config) {
		cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(s.skew.Load())) }
	})
	id, err := identity.Parse("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: s.f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert,
		Certificates: []tls.Certificate{s.f.PKI.Leaf(t, id, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth)).TLS()}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// agentFor starts an agent for id that bootstraps from a fresh token, as
// `mica agent` does.
func (s *realServer) agentFor(t *testing.T, id, tok string) (*Agent, error) {
	t.Helper()
	var a *Agent
	c, err := client.Bootstrap(t.Context(), client.Config{Server: s.url,
		GetCertificate: func() (*tls.Certificate, error) { return a.TLSCertificate() }}, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	a, err = New(Config{Server: c, Token: tok, Dir: credential.Dir{Path: filepath.Join(t.TempDir(), "cred")}})
	if err != nil {
		t.Fatal(err)
	}
	return a, a.Start(t.Context())
}

func (s *realServer) token(t *testing.T, id string) string {
	return s.f.Token(t, authority.TokenRequest{Identity: id, Profile: "service"})
}

// TestBlocksFromTheRealServer: the problems the real API answers are read
// as the right blocks, and a running agent blocks on a revocation.
func TestBlocksFromTheRealServer(t *testing.T) {
	s := serveReal(t)
	ctx := t.Context()
	enrolled := func(id string) *Agent {
		a, err := s.agentFor(t, id, s.token(t, id))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	serial := func(a *Agent) string {
		st, _ := a.State()
		return authority.SerialHex(st.Credential.Leaf())
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, a *Agent)
		want  Block
	}{
		{"revoked", func(t *testing.T, a *Agent) {
			if _, err := s.f.Authority.Revoke(ctx, s.f.Admin, serial(a), 1, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}, BlockRevoked},
		{"denied", func(t *testing.T, a *Agent) {
			st, _ := a.State()
			if _, err := s.f.Authority.Deny(ctx, s.f.Admin, st.Credential.ID, "test", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}, BlockDenied},
		{"expired", func(t *testing.T, a *Agent) { s.skew.Store(int64(2 * time.Hour)) }, BlockExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer s.skew.Store(0)
			a := enrolled("spiffe://example.org/billing/" + tt.name)
			tt.setup(t, a)
			err := a.RenewOnce(ctx)
			if got := blockOf(err, false); got != tt.want {
				t.Fatalf("renewal: %v read as %q, want %q", err, got, tt.want)
			}
		})
	}

	t.Run("token replayed", func(t *testing.T) {
		id := "spiffe://example.org/billing/replayed"
		tok := s.token(t, id)
		if _, err := s.agentFor(t, id, tok); err != nil {
			t.Fatal(err)
		}
		_, err := s.agentFor(t, id, tok)
		if got := blockOf(err, true); got != BlockToken {
			t.Fatalf("second enrollment with one token: %v read as %q, want token", err, got)
		}
	})

	t.Run("unknown certificate", func(t *testing.T) {
		a := enrolled("spiffe://example.org/billing/unknown")
		other := testpki.New(t, "example.org")
		l := other.Leaf(t, other.ID(t, "/billing/unknown"))
		foreign, err := credential.New(append([]*x509.Certificate{l.Cert}, l.Chain...), l.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.update(func(st *State) { st.Credential = newCredential(foreign) })
		err = a.RenewOnce(ctx)
		if got := blockOf(err, false); got != BlockUnknown {
			t.Fatalf("renewal with a certificate of another CA: %v read as %q, want unknown", err, got)
		}
	})

	t.Run("running agent blocks on revocation", func(t *testing.T) {
		a := enrolled("spiffe://example.org/billing/running")
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- a.Run(runCtx) }()
		defer func() { cancel(); <-done }()
		if _, err := s.f.Authority.Revoke(ctx, s.f.Admin, serial(a), 1, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		a.RenewNow()
		deadline := time.After(time.Minute)
		for {
			st, changed := a.State()
			if st.Blocked == BlockRevoked {
				break
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("the agent did not block on its revoked certificate: %q", st.Blocked)
			}
		}
	})
}

// losingServer passes requests to the real client and loses the first
// enrollment's response, as a cut connection would.
type losingServer struct {
	*client.Client
	lost atomic.Pointer[client.CertificateResponse]
}

func (l *losingServer) Enroll(ctx context.Context, token string, req client.CertificateRequest) (*client.CertificateResponse, error) {
	resp, err := l.Client.Enroll(ctx, token, req)
	if err == nil && l.lost.CompareAndSwap(nil, resp) {
		return nil, errDown
	}
	return resp, err
}

// TestLostEnrollmentResponse: an enrollment whose response was lost is
// retried, by a restarted agent, with the key kept on disk and the same
// token, and gets the certificate the token paid for, not "token already
// used".
func TestLostEnrollmentResponse(t *testing.T) {
	s := serveReal(t)
	id := "spiffe://example.org/billing/lost"
	tok := s.token(t, id)
	dir := credential.Dir{Path: filepath.Join(t.TempDir(), "cred")}
	var a *Agent
	c, err := client.Bootstrap(t.Context(), client.Config{Server: s.url,
		GetCertificate: func() (*tls.Certificate, error) { return a.TLSCertificate() }}, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := &losingServer{Client: c}
	if a, err = New(Config{Server: srv, Token: tok, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err == nil {
		t.Fatal("the first start enrolled although its response was lost")
	}
	lost := srv.lost.Load()
	if lost == nil {
		t.Fatal("no enrollment reached the server")
	}
	// A new process: same directory, same token.
	if a, err = New(Config{Server: srv, Token: tok, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatalf("the retried enrollment: %v", err)
	}
	st, _ := a.State()
	if got := authority.SerialHex(st.Credential.Leaf()); got != lost.Serial {
		t.Fatalf("the retry got certificate %s, want %s, the one the token paid for", got, lost.Serial)
	}
	if _, err := os.Stat(filepath.Join(dir.Path, credential.PendingKeyFile)); !os.IsNotExist(err) {
		t.Errorf("the pending key is still on disk: %v", err)
	}
}

// TestClientFollowsTheBundle: the agent's own client trusts the bundle it
// fetched, not only the roots it started with: a server that moves to a
// certificate under the bundle's root (a root rollover) is still reached.
func TestClientFollowsTheBundle(t *testing.T) {
	f := authoritytest.New(t)            // its root is the bundle's
	old := testpki.New(t, "example.org") // the root the agent started with
	id, err := identity.Parse("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	before := old.Leaf(t, id, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth)).TLS()
	after := f.PKI.Leaf(t, id, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth)).TLS()
	var moved atomic.Bool
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert := before
		if moved.Load() {
			cert = after
		}
		return &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert, Certificates: []tls.Certificate{cert}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	var a *Agent
	c, err := client.New(client.Config{Server: srv.URL, Roots: old.Roots(),
		GetCertificate: func() (*tls.Certificate, error) { return a.TLSCertificate() }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/follow", Profile: "service"})
	a, err = New(Config{Server: c, Token: tok, Dir: credential.Dir{Path: filepath.Join(t.TempDir(), "cred")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil { // enrolls and fetches the bundle
		t.Fatal(err)
	}
	moved.Store(true)
	c.Close()
	srv.CloseClientConnections()
	if _, err := c.Bundle(t.Context()); err != nil {
		t.Fatalf("after the server moved to the bundle's root: %v", err)
	}
}
