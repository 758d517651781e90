package mtls_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
)

// liveServer is an HTTP server on loopback with a Verifier that tracks its
// connections; closed receives every connection that ends.
type liveServer struct {
	addr   string
	v      *mtls.Verifier
	reg    *prometheus.Registry
	closed chan net.Conn
	active chan net.Conn
	mu     sync.Mutex
	seen   map[net.Conn]bool
}

// serveLive starts the server and, unless run is false, the Verifier's Run.
func serveLive(t *testing.T, pki *testpki.PKI, set *revocationSet, run bool) *liveServer {
	t.Helper()
	metrics, reg := newMetrics(t)
	src := sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath)))
	v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: src, Authorize: mtls.AuthorizeTrustDomains("example.org"),
		Revocations: &set.Set, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	s := &liveServer{v: v, reg: reg, closed: make(chan net.Conn, 16), active: make(chan net.Conn, 64), seen: map[net.Conn]bool{}}
	cfg := mustConfig(t, mtls.ServerConfig, mtls.Options{Source: src, Verifier: v})
	srv := &http.Server{TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := mtls.PeerIdentity(r)
			fmt.Fprintf(w, "hello %s", p.Identity)
		})),
		ConnState: func(c net.Conn, st http.ConnState) {
			v.ConnState(c, st)
			// Only connections that served a request are reported: a
			// client may open and drop a spare one.
			s.mu.Lock()
			defer s.mu.Unlock()
			switch st {
			case http.StateActive:
				if !s.seen[c] {
					s.seen[c] = true
					s.active <- c
				}
			case http.StateClosed:
				if s.seen[c] {
					s.closed <- c
				}
			}
		}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.ServeTLS(ln, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if run {
			v.Run(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return s
}

// httpClient speaks HTTP/2 when h2, else HTTP/1.1 keep-alive, with the
// client's certificate.
func httpClient(t *testing.T, pki *testpki.PKI, leaf *testpki.Leaf, h2 bool) *http.Client {
	t.Helper()
	cfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, leaf), Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// request GETs / and reports the status (0 when the request failed), the
// protocol and whether it went over a connection used before.
func request(t *testing.T, c *http.Client, addr string) (status, proto int, reused bool, err error) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "https://"+addr+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, reused, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.ProtoMajor, reused, nil
}

// waitConn waits for a connection on ch; the deadline only bounds a broken
// test.
func waitConn(t *testing.T, ch <-chan net.Conn, what string) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no connection %s", what)
		return nil
	}
}

// TestRevocationClosesLiveConnections: a client whose keep-alive HTTP/1.1
// or HTTP/2 connection was accepted before it was revoked or denied loses
// the connection as soon as the Set changes, and cannot make another.
func TestRevocationClosesLiveConnections(t *testing.T) {
	pki := testpki.New(t, "example.org")
	for _, h2 := range []bool{false, true} {
		for _, change := range []string{"revoke", "revoke intermediate", "deny"} {
			t.Run(fmt.Sprintf("h2=%v/%s", h2, change), func(t *testing.T) {
				set := &revocationSet{}
				s := serveLive(t, pki, set, true)
				victim := pki.Leaf(t, pki.ID(t, clientPath))
				bystander := pki.Leaf(t, pki.ID(t, "/billing/other"))
				vc, bc := httpClient(t, pki, victim, h2), httpClient(t, pki, bystander, h2)
				for _, c := range []*http.Client{vc, bc} {
					status, proto, _, err := request(t, c, s.addr)
					if err != nil || status != 200 || (proto == 2) != h2 {
						t.Fatalf("before: status %d HTTP/%d, %v", status, proto, err)
					}
				}
				victimConn := waitConn(t, s.active, "for the victim")
				waitConn(t, s.active, "for the bystander")
				if n := s.v.Tracked(); n != 2 {
					t.Fatalf("%d connections tracked, want 2", n)
				}

				reason := mtls.ReasonRevokedFeed
				switch change {
				case "revoke":
					set.revoke(victim.Cert)
				case "revoke intermediate":
					set.revoke(pki.Intermediate)
				case "deny":
					set.deny("spiffe://example.org" + clientPath)
					reason = mtls.ReasonDenied
				}
				closedWant := 1.0
				if change == "revoke intermediate" {
					closedWant = 2 // every client of the intermediate goes
				}
				var victimClosed bool
				for range int(closedWant) {
					victimClosed = victimClosed || waitConn(t, s.closed, "closed after the change") == victimConn
				}
				if !victimClosed {
					t.Fatal("the victim's connection is not the one closed")
				}
				if status, _, _, err := request(t, vc, s.addr); err == nil {
					t.Fatalf("the revoked client got %d after the change", status)
				}
				if got := testutil.ToFloat64(counterVec(t, s.reg, "mica_mtls_connections_closed_total", string(reason))); got != closedWant {
					t.Errorf("mica_mtls_connections_closed_total{reason=%s} = %v, want %v", reason, got, closedWant)
				}
				if change != "revoke intermediate" {
					status, _, reused, err := request(t, bc, s.addr)
					if err != nil || status != 200 || !reused {
						t.Errorf("the bystander: status %d, reused %v, %v; want 200 on its kept connection", status, reused, err)
					}
				}
			})
		}
	}
}

// TestMiddlewareRefusesRequestsOfRevokedPeers: without Run, the connection
// stays open, but the next request on it is refused.
func TestMiddlewareRefusesRequestsOfRevokedPeers(t *testing.T) {
	pki := testpki.New(t, "example.org")
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			set := &revocationSet{}
			s := serveLive(t, pki, set, false)
			victim := pki.Leaf(t, pki.ID(t, clientPath))
			c := httpClient(t, pki, victim, h2)
			if status, _, _, err := request(t, c, s.addr); err != nil || status != 200 {
				t.Fatalf("before: %d %v", status, err)
			}
			set.revoke(victim.Cert)
			status, _, reused, err := request(t, c, s.addr)
			if err != nil || status != http.StatusForbidden || !reused {
				t.Fatalf("after: status %d, reused %v, %v; want 403 on the kept connection", status, reused, err)
			}
			if got := testutil.ToFloat64(counterVec(t, s.reg, "mica_mtls_requests_refused_total", string(mtls.ReasonRevokedFeed))); got != 1 {
				t.Errorf("mica_mtls_requests_refused_total = %v, want 1", got)
			}
		})
	}
}

// TestTransportClosesConnectionsToRevokedServers: the client side of the
// same promise, through Verifier.Transport.
func TestTransportClosesConnectionsToRevokedServers(t *testing.T) {
	pki := testpki.New(t, "example.org")
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			serverLeaf := pki.Leaf(t, pki.ID(t, serverPath))
			closed := make(chan net.Conn, 4)
			var mu sync.Mutex
			served := map[net.Conn]bool{}
			srv := &http.Server{TLSConfig: mustConfig(t, mtls.ServerConfig, mtls.Options{Source: sourceOf(pki, serverLeaf),
				Authorize: mtls.AuthorizeTrustDomains("example.org")}),
				ErrorLog: log.New(io.Discard, "", 0),
				Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				ConnState: func(c net.Conn, st http.ConnState) {
					mu.Lock()
					defer mu.Unlock()
					if st == http.StateActive {
						served[c] = true
					}
					if st == http.StateClosed && served[c] {
						closed <- c
					}
				}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.ServeTLS(ln, "", "")
			t.Cleanup(func() { srv.Close() })

			set := &revocationSet{}
			clientSrc := sourceOf(pki, pki.Leaf(t, pki.ID(t, clientPath)))
			v, err := mtls.NewVerifier(mtls.VerifierConfig{Roots: clientSrc, Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath),
				Revocations: &set.Set})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); v.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			tr := &http.Transport{TLSClientConfig: mustConfig(t, mtls.ClientConfig, mtls.Options{Source: clientSrc, Verifier: v}),
				ForceAttemptHTTP2: h2}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: v.Transport(tr), Timeout: 10 * time.Second}
			if status, proto, _, err := request(t, c, ln.Addr().String()); err != nil || status != 200 || (proto == 2) != h2 {
				t.Fatalf("before: %d HTTP/%d %v", status, proto, err)
			}
			if v.Tracked() != 1 {
				t.Fatalf("%d connections tracked, want 1", v.Tracked())
			}
			if h2 {
				set.deny("spiffe://example.org" + serverPath)
			} else {
				set.revoke(serverLeaf.Cert)
			}
			waitConn(t, closed, "closed by the client after the server's revocation")
			if status, _, _, err := request(t, c, ln.Addr().String()); err == nil {
				t.Fatalf("a request to the revoked server got %d", status)
			}
		})
	}
}

// counterVec reads one series of a counter vector by its reason label.
func counterVec(t *testing.T, reg *prometheus.Registry, name, reason string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "copy"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "absent"}, func() float64 { return 0 })
}
