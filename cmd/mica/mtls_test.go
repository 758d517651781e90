package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
)

// testMTLSRevokedClient: a service built with the mtls package follows the
// real server's revocation feed; once a connected client's certificate is
// revoked with `mica cert revoke`, that client's next handshake (resumed,
// as a reconnecting client's would be) is refused as revoked_feed. The
// delay is logged, not asserted.
func (e *testEnv) testMTLSRevokedClient(t *testing.T) {
	serverDir := e.issue("spiffe://example.org/billing/mtls-api", "service")
	clientDir := e.issue("spiffe://example.org/billing/mtls-worker", "service")

	sub := e.subscriber(t, e.server)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sub.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the subscriber has the server's set", func() error { return e.sameAsServer(sub) })

	serverSrc, err := mtls.NewFileSource(serverDir)
	if err != nil {
		t.Fatal(err)
	}
	defer serverSrc.Close()
	reg := prometheus.NewRegistry()
	metrics, err := mtlsprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg, err := mtls.ServerConfig(mtls.Options{Source: serverSrc, Revocations: sub.Set(), Metrics: metrics,
		Authorize: mtls.AuthorizePathPrefixes("spiffe://example.org/billing/")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	results := make(chan error, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, serverCfg)
				err := tc.Handshake()
				results <- err
				if err == nil {
					tc.Write([]byte("hello\n"))
					bufio.NewReader(tc).ReadString('\n') // held open until the client goes
				}
			}()
		}
	}()

	clientSrc, err := mtls.NewFileSource(clientDir)
	if err != nil {
		t.Fatal(err)
	}
	defer clientSrc.Close()
	clientCfg, err := mtls.ClientConfig(mtls.Options{Source: clientSrc, Authorize: mtls.AuthorizeIDs("spiffe://example.org/billing/mtls-api")})
	if err != nil {
		t.Fatal(err)
	}
	// connect returns the open connection and the server's verdict.
	connect := func() (*tls.Conn, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
		if err == nil {
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = bufio.NewReader(conn).ReadString('\n')
		}
		serverErr := <-results
		if serverErr != nil {
			if conn != nil {
				conn.Close()
			}
			return nil, serverErr
		}
		return conn, err
	}
	connected, err := connect()
	if err != nil {
		t.Fatalf("the client before revocation: %v", err)
	}
	defer connected.Close()

	serial := readLeaf(t, clientDir).SerialNumber.Text(16)
	start := time.Now()
	e.micaOK("cert", "revoke", serial, "--reason", "keyCompromise")
	revoked := time.Now()
	attempts := 0
	eventually(t, "the revoked client's next handshake is refused", func() error {
		attempts++
		conn, err := connect()
		if err == nil {
			conn.Close()
			return errors.New("accepted")
		}
		var rej *mtls.RejectError
		if !errors.As(err, &rej) {
			return err
		}
		if rej.Reason != mtls.ReasonRevokedFeed {
			t.Fatalf("refused as %s, want %s: %v", rej.Reason, mtls.ReasonRevokedFeed, err)
		}
		return nil
	})
	t.Logf("refused as revoked_feed %v after `mica cert revoke` returned (%v after it started), on attempt %d",
		time.Since(revoked).Round(time.Millisecond), time.Since(start).Round(time.Millisecond), attempts)
	if n := handshakeCount(t, reg, "server", "revoked_feed"); n != 1 {
		t.Errorf("mica_mtls_handshakes_total{side=server,reason=revoked_feed} = %v, want 1", n)
	}
}

// handshakeCount reads one series of mica_mtls_handshakes_total.
func handshakeCount(t *testing.T, reg *prometheus.Registry, side, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mica_mtls_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["side"] == side && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no mica_mtls_handshakes_total{side=%q,reason=%q}", side, reason)
	return 0
}

// TestBenchHandshakeRuns runs `mica bench handshake` briefly: every case
// completes handshakes without errors, resumed cases resume, and the mtls
// cases went through the package's verification. Figures are printed by
// the command, never asserted.
func TestBenchHandshakeRuns(t *testing.T) {
	out := micaOK(t, nil, "bench", "handshake", "--concurrency", "2", "--duration", "600ms", "--rounds", "2",
		"--warmup", "100ms", "--peers", "64", "--revoked", "1000", "--json")
	var res bench.HandshakeResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, out)
	}
	if len(res.Cases) != 6 { // full, full-new-peer and resumed, each crypto/tls and mtls
		t.Fatalf("%d cases, want 6:\n%s", len(res.Cases), out)
	}
	for _, c := range res.Cases {
		if c.Handshakes == 0 || c.Errors != 0 || c.P99Ms < c.P50Ms {
			t.Errorf("%s %s: %+v", c.Kind, c.Config, c)
		}
		if resumed := c.Kind == "resumed"; resumed != (c.Resumed > 0) || resumed && c.Resumed < c.Handshakes/2 {
			t.Errorf("%s %s: %d of %d handshakes resumed", c.Kind, c.Config, c.Resumed, c.Handshakes)
		}
	}
	if res.MTLSVerified["accepted"] == 0 || res.MTLSVerified["rejected"] != 0 {
		t.Errorf("mtls verified %v", res.MTLSVerified)
	}
}
