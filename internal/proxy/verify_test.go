package proxy

import (
	"context"
	"crypto"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
)

// proxyOpts starts and runs a Proxy with the identity path, the options o
// (Source, metrics and DrainTimeout are filled in) and the listeners; its
// metrics are in the registry returned.
func (w *world) proxyOpts(path string, o Options, ls ...ListenerConfig) (*Proxy, *prometheus.Registry) {
	w.t.Helper()
	reg := prometheus.NewRegistry()
	var err error
	if o.Metrics, err = NewMetrics(reg); err != nil {
		w.t.Fatal(err)
	}
	if o.HandshakeMetrics, err = mtlsprom.New(reg); err != nil {
		w.t.Fatal(err)
	}
	if o.Source == nil {
		o.Source = w.source(path)
	}
	o.DrainTimeout = 5 * time.Second
	p, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := p.Apply(ls); err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	w.t.Cleanup(func() { cancel(); <-done })
	return p, reg
}

// handshakes is mica_mtls_handshakes_total{side, reason} in reg.
func handshakes(t *testing.T, reg *prometheus.Registry, side string, reason mtls.Reason) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "mica_mtls_handshakes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["side"] == side && labels["reason"] == string(reason) {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestPinnedCAsThroughProxy: a proxy pinned to the root keeps accepting
// clients after the intermediate is rotated (new key); one pinned to the
// old intermediate refuses the rotated clients in the handshake with
// ca_not_pinned, and so does an outbound listener whose upstream is not
// under a pinned CA.
func TestPinnedCAsThroughProxy(t *testing.T) {
	w := newWorld(t)
	rotated := w.pki.Rotated(t)
	if mtls.PinOf(rotated.Intermediate) == mtls.PinOf(w.pki.Intermediate) {
		t.Fatal("the rotated intermediate has the old key")
	}
	roots := []*x509.Certificate{w.pki.Root}
	before := w.source("/billing/worker")
	after := &staticSource{cert: rotated.Leaf(t, rotated.ID(t, "/billing/worker")).TLS(), roots: roots}
	allow := &Rule{TrustDomains: []string{"example.org"}}

	rootPinned, _ := w.proxyOpts("/proxy", Options{PinnedCAs: []mtls.SPKIPin{mtls.PinOf(w.pki.Root)}}, inbound("in", w.backend.URL, allow))
	for name, src := range map[string]*staticSource{"before the rotation": before, "after the rotation": after} {
		if code, body, _ := get(t, w.clientWith(src, false), addrOf(rootPinned, "in"), "/", nil); code != 200 {
			t.Errorf("root pinned, a client %s: %d %s", name, code, body)
		}
	}

	interPinned, reg := w.proxyOpts("/proxy", Options{PinnedCAs: []mtls.SPKIPin{mtls.PinOf(w.pki.Intermediate)}}, inbound("in", w.backend.URL, allow))
	if code, body, _ := get(t, w.clientWith(before, false), addrOf(interPinned, "in"), "/", nil); code != 200 {
		t.Errorf("old intermediate pinned, a client under it: %d %s", code, body)
	}
	seen := len(w.backend.requests())
	if code, body, _ := get(t, w.clientWith(after, false), addrOf(interPinned, "in"), "/", nil); code != 0 {
		t.Fatalf("old intermediate pinned, a client under the new one got %d %s; want the handshake refused", code, body)
	}
	if n := handshakes(t, reg, "server", mtls.ReasonNotPinned); n != 1 {
		t.Errorf("mica_mtls_handshakes_total{side=server,reason=ca_not_pinned} = %v, want 1", n)
	}
	if n := len(w.backend.requests()); n != seen {
		t.Errorf("the backend saw %d requests from the refused client", n-seen)
	}

	// Outbound: the upstream (the root-pinned proxy) is under the root but
	// not under the pinned CA of another PKI.
	other := testpki.New(t, "example.org")
	out, outReg := w.proxyOpts("/legacy/app", Options{PinnedCAs: []mtls.SPKIPin{mtls.PinOf(other.Root)}},
		ListenerConfig{Name: "out", Mode: Outbound, Listen: "127.0.0.1:0", Upstream: "https://" + addrOf(rootPinned, "in"),
			Expect: &Rule{IDs: []string{"spiffe://example.org/proxy"}}})
	resp, err := http.Get("http://" + addrOf(out, "out") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("an upstream under no pinned CA: %s, want 502", resp.Status)
	}
	if n := handshakes(t, outReg, "client", mtls.ReasonNotPinned); n != 1 {
		t.Errorf("mica_mtls_handshakes_total{side=client,reason=ca_not_pinned} = %v, want 1", n)
	}
}

// crlServer serves the root's and the intermediate's CRLs, or nothing
// until publish is called.
type crlServer struct {
	*httptest.Server
	mu   sync.Mutex
	crls map[string][]byte // by path
}

func newCRLServer(t *testing.T) *crlServer {
	s := &crlServer{crls: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		der, ok := s.crls[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *crlServer) publish(t *testing.T, path string, issuer *x509.Certificate, signer crypto.Signer, number int64) {
	t.Helper()
	now := time.Now()
	der, err := crl.Build(crl.Params{Issuer: issuer, Signer: issuance.NewCRLSigner(issuer, signer), Number: big.NewInt(number), ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(time.Hour)}, func(func(crl.Entry) bool) {})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.crls[path] = der
	s.mu.Unlock()
}

// TestCRLHardFailThroughProxy: with crl_policy hard-fail, a client whose
// issuers have no valid, fresh CRL is refused in the handshake
// (crl_unavailable) while a soft-fail proxy lets it in; once the CRLs are
// published, the hard-fail proxy accepts it.
func TestCRLHardFailThroughProxy(t *testing.T) {
	w := newWorld(t)
	crls := newCRLServer(t)
	// The client's certificate names its issuer's CRL, as mica's do.
	iss, err := issuance.New(issuance.Config{Cert: w.pki.Intermediate, Signer: w.pki.IntermediateKey, CRLURL: crls.URL + "/intermediate.crl"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := w.pki.Leaf(t, w.pki.ID(t, "/billing/worker"))
	now := time.Now()
	cert, err := iss.Issue(issuance.Request{PublicKey: leaf.Key.Public(), Identity: w.pki.ID(t, "/billing/worker"),
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	leaf.Cert = cert
	client := &staticSource{cert: leaf.TLS(), roots: []*x509.Certificate{w.pki.Root}}

	proxySrc := w.source("/proxy")
	checker := func() *mtls.CRLChecker {
		// The root's CRL is configured: a root names no distribution point.
		c, err := mtls.NewCRLChecker(mtls.CRLConfig{URLs: []string{crls.URL + "/root.crl"}, Roots: proxySrc.Roots, Interval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return c
	}
	allow := &Rule{TrustDomains: []string{"example.org"}}
	hardCRL := checker()
	// CRLWait only bounds a broken test: the first handshake's wait ends
	// when the fetches of the CRLs (404 here) end.
	hard, reg := w.proxyOpts("/proxy", Options{Source: proxySrc, CRL: hardCRL, CRLPolicy: mtls.CRLHardFail, CRLWait: 20 * time.Second},
		inbound("in", w.backend.URL, allow))
	soft, _ := w.proxyOpts("/proxy", Options{Source: proxySrc, CRL: checker()}, inbound("in", w.backend.URL, allow))

	if code, body, _ := get(t, w.clientWith(client, false), addrOf(hard, "in"), "/", nil); code != 0 {
		t.Fatalf("hard-fail without CRLs: %d %s; want the handshake refused", code, body)
	}
	if n := handshakes(t, reg, "server", mtls.ReasonCRLUnavailable); n != 1 {
		t.Errorf("mica_mtls_handshakes_total{side=server,reason=crl_unavailable} = %v, want 1", n)
	}
	if len(w.backend.requests()) != 0 {
		t.Error("the backend saw the refused client")
	}
	if code, body, _ := get(t, w.clientWith(client, false), addrOf(soft, "in"), "/", nil); code != 200 {
		t.Errorf("soft-fail without CRLs: %d %s; want the client let in", code, body)
	}

	crls.publish(t, "/root.crl", w.pki.Root, w.pki.RootKey, 1)
	crls.publish(t, "/intermediate.crl", w.pki.Intermediate, w.pki.IntermediateKey, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hardCRL.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(t, w.clientWith(client, false), addrOf(hard, "in"), "/", nil); code != 200 {
		t.Errorf("hard-fail with fresh CRLs: %d %s", code, body)
	}
}
