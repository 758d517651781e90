package workload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/internal/workloadapi"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/workload"
)

type staticSource struct {
	cert  *tls.Certificate
	roots []*x509.Certificate
}

func (s staticSource) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s staticSource) Roots() []*x509.Certificate             { return s.roots }

// TestSource: the credential and bundle come from the real Workload API
// server, and a rotation reaches the next handshake.
func TestSource(t *testing.T) {
	pki := testpki.New(t, "example.org")
	id := spiffeid.RequireFromString("spiffe://example.org/billing/api")
	agent := &snapshots{changed: make(chan struct{})}
	svid := func() *testpki.Leaf {
		l := pki.Leaf(t, pki.ID(t, "/billing/api"))
		agent.set(workloadapi.Snapshot{
			SVIDs:       []workloadapi.X509SVID{{ID: id, Chain: append([]*x509.Certificate{l.Cert}, l.Chain...), Key: l.Key}},
			TrustDomain: pki.TrustDomain, Roots: []*x509.Certificate{pki.Root}, JWTBundle: []byte(`{"keys":[]}`),
		})
		return l
	}
	first := svid()
	api, err := workloadapi.New(workloadapi.Config{Snapshot: agent.snapshot,
		FetchJWTSVID: func(context.Context, spiffeid.ID, []string) (string, error) { return "", errors.New("not used") }})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- api.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	src, err := workload.NewSource(wctx, "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if roots := src.Roots(); len(roots) != 1 || !roots[0].Equal(pki.Root) {
		t.Fatalf("Roots() = %d certificates, want the root", len(roots))
	}
	serverCfg, err := mtls.ServerConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeTrustDomains("example.org")})
	if err != nil {
		t.Fatal(err)
	}
	tln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tln.Close()
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte{1})
				}
			}()
		}
	}()
	client := pki.Leaf(t, pki.ID(t, "/billing/worker"))
	cc := client.TLS()
	clientCfg, err := mtls.ClientConfig(mtls.Options{Source: staticSource{cert: &cc, roots: []*x509.Certificate{pki.Root}},
		Authorize: mtls.AuthorizeIDs(id.String())})
	if err != nil {
		t.Fatal(err)
	}
	clientCfg.ClientSessionCache = nil
	presented := func() (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", tln.Addr().String(), clientCfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			return "", err
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
	}
	if got, err := presented(); err != nil || got != first.Cert.SerialNumber.Text(16) {
		t.Fatalf("presented %s (%v), want the SVID %s", got, err, first.Cert.SerialNumber.Text(16))
	}
	second := svid()
	deadline := time.After(20 * time.Second) // bounds a broken test; not a timing claim
	for {
		got, err := presented()
		if err == nil && got == second.Cert.SerialNumber.Text(16) {
			break
		}
		select {
		case <-src.Updated():
		case <-deadline:
			t.Fatalf("the rotated SVID is not presented within 20s: %s, %v", got, err)
		}
	}
}

// snapshots is the agent's side of the Workload API, set by hand.
type snapshots struct {
	mu      sync.Mutex
	snap    workloadapi.Snapshot
	changed chan struct{}
}

func (s *snapshots) snapshot() (workloadapi.Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap, s.changed
}

func (s *snapshots) set(snap workloadapi.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap = snap
	close(s.changed)
	s.changed = make(chan struct{})
}
