package mtls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
	"github.com/mica-pki/mica/revocation"
)

// staticSource is a Source that never changes.
type staticSource struct {
	cert  *tls.Certificate
	roots []*x509.Certificate
}

func (s staticSource) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s staticSource) Roots() []*x509.Certificate             { return s.roots }

func sourceOf(p *testpki.PKI, l *testpki.Leaf) staticSource {
	c := l.TLS()
	return staticSource{cert: &c, roots: []*x509.Certificate{p.Root}}
}

// handshakeResult is what the server side saw of one connection.
type handshakeResult struct {
	err   error
	state tls.ConnectionState
}

// tlsServer accepts TLS connections on loopback with a config under test,
// reports each handshake and, when it succeeds, writes one line.
type tlsServer struct {
	addr    string
	results chan handshakeResult
}

func serveTLS(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), results: make(chan handshakeResult, 64)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				err := tc.HandshakeContext(context.Background())
				s.results <- handshakeResult{err: err, state: tc.ConnectionState()}
				if err == nil {
					tc.Write([]byte("hello " + tc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16) + "\n"))
				}
			}()
		}
	}()
	return s
}

// dial connects with cfg, reads the server's line and returns the client's
// view and the server's result. clientErr is set when either side refused
// (the client sees the server's refusal as an alert on its first read).
func (s *tlsServer) dial(t *testing.T, cfg *tls.Config) (client tls.ConnectionState, server handshakeResult, clientErr error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", s.addr, cfg)
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		var line string
		line, err = bufio.NewReader(conn).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "hello ") {
			err = errors.New("unexpected line " + line)
		}
		client = conn.ConnectionState()
		conn.Close()
	}
	select {
	case server = <-s.results:
	case <-time.After(10 * time.Second):
		t.Fatal("the server reported no handshake")
	}
	return client, server, err
}

// handshakes reads mica_mtls_handshakes_total for one side and reason.
func handshakes(t *testing.T, reg *prometheus.Registry, side string, reason mtls.Reason) float64 {
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
			if labels["side"] == side && labels["reason"] == string(reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no mica_mtls_handshakes_total{side=%q,reason=%q}", side, reason)
	return 0
}

func newMetrics(t *testing.T) (*mtlsprom.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := mtlsprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func mustConfig(t *testing.T, f func(mtls.Options) (*tls.Config, error), o mtls.Options) *tls.Config {
	t.Helper()
	cfg, err := f(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// rejectReason is the Reason of err's RejectError, or "" when there is
// none.
func rejectReason(err error) mtls.Reason {
	var rej *mtls.RejectError
	if errors.As(err, &rej) {
		return rej.Reason
	}
	return ""
}

// gatherNames lists the metric names reg exports.
func gatherNames(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}

// revocationSet is a revocation.Set changed by hand, as the feed would.
type revocationSet struct {
	revocation.Set
	seq int64
}

func (s *revocationSet) revoke(c *x509.Certificate) {
	s.seq++
	s.Apply(revocation.Event{Seq: s.seq, Kind: revocation.KindRevoked, Serial: c.SerialNumber.Text(16), NotAfter: c.NotAfter})
}

func (s *revocationSet) deny(name string) {
	s.seq++
	s.Apply(revocation.Event{Seq: s.seq, Kind: revocation.KindDenied, Identity: name})
}

// metricSum adds up every series of a metric (counter or gauge).
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
