package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
)

// crlServer serves one CRL over plain HTTP, with an ETag, as mica's
// listener does.
type crlServer struct {
	*httptest.Server
	der      atomic.Pointer[[]byte]
	requests atomic.Int64
}

func newCRLServer(t *testing.T) *crlServer {
	s := &crlServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		der := s.der.Load()
		if der == nil {
			http.NotFound(w, r)
			return
		}
		etag := `"` + strconv.Itoa(len(*der)) + "-" + strconv.Itoa(int((*der)[len(*der)-1])) + `"`
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(*der)
	}))
	t.Cleanup(s.Close)
	return s
}

// publish signs a CRL of the intermediate listing serials, with signer
// (the intermediate's key, or a forger's).
func (s *crlServer) publish(t *testing.T, p *testpki.PKI, signer *testpki.PKI, number int64, serials ...*big.Int) {
	t.Helper()
	now := time.Now()
	der, err := crl.Build(crl.Params{Issuer: p.Intermediate, Signer: issuance.NewCRLSigner(p.Intermediate, signer.IntermediateKey), Number: big.NewInt(number),
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour)},
		func(yield func(crl.Entry) bool) {
			for _, sn := range serials {
				if !yield(crl.Entry{Serial: sn.Bytes(), RevokedAt: now.Add(-time.Minute), Reason: 1}) {
					return
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	s.der.Store(&der)
}

// TestRevokedViaCRL: the checker learns the CRL distribution point and the
// intermediate from a verified peer, fetches the CRL in the background,
// and from then on the revoked certificate's handshakes fail.
func TestRevokedViaCRL(t *testing.T) {
	pki := testpki.New(t, "example.org")
	cs := newCRLServer(t)
	iss, err := issuance.New(issuance.Config{Cert: pki.Intermediate, Signer: pki.IntermediateKey, CRLURL: cs.URL + "/crl/intermediate.crl"})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(path string) *testpki.Leaf {
		id := pki.ID(t, path)
		key := pki.Leaf(t, id).Key
		cert, err := iss.Issue(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: time.Now().Add(-time.Minute),
			NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		return &testpki.Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{pki.Intermediate}}
	}
	good, revoked := issue("/billing/good"), issue("/billing/revoked")
	cs.publish(t, pki, pki, 1, revoked.Cert.SerialNumber)

	srvSrc := sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath)))
	checker, err := mtls.NewCRLChecker(mtls.CRLConfig{Roots: srvSrc.Roots, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()
	defer func() { cancel(); <-done }()

	metrics, reg := newMetrics(t)
	srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, mtls.Options{Source: srvSrc, CRL: checker, Metrics: metrics,
		Authorize: mtls.AuthorizePathPrefixes("spiffe://example.org/billing/")}))
	client := func(l *testpki.Leaf) *tls.Config {
		cfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, l), Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})
		cfg.ClientSessionCache = nil
		return cfg
	}
	if _, res, err := srv.dial(t, client(good)); err != nil || res.err != nil {
		t.Fatalf("a certificate not on the CRL: client %v, server %v", err, res.err)
	}
	// The first sight of the revoked certificate's chain sends the checker
	// for the CRL; once it holds it (Changed), the certificate is refused.
	for deadline := time.After(20 * time.Second); ; {
		changed := checker.Changed()
		_, res, _ := srv.dial(t, client(revoked))
		if rejectReason(res.err) == mtls.ReasonRevokedCRL {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the revoked certificate is not refused within 20s: server result %s", errText(res.err))
		}
	}
	if n := handshakes(t, reg, "server", mtls.ReasonRevokedCRL); n != 1 {
		t.Errorf("mica_mtls_handshakes_total{reason=revoked_crl} = %v, want 1", n)
	}
	if _, res, err := srv.dial(t, client(good)); err != nil || res.err != nil {
		t.Fatalf("a certificate not on the CRL after the CRL arrived: client %v, server %v", err, res.err)
	}
	if !checker.Revoked(revoked.Cert) || checker.Revoked(good.Cert) {
		t.Error("Revoked disagrees with the CRL")
	}

	// A refresh that finds the same CRL costs a 304; a newer one replaces it.
	before := cs.requests.Load()
	if err := checker.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if cs.requests.Load() != before+1 {
		t.Errorf("Refresh made %d requests, want 1", cs.requests.Load()-before)
	}
	cs.publish(t, pki, pki, 2)
	if err := checker.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if checker.Revoked(revoked.Cert) {
		t.Error("still revoked after a newer CRL without it")
	}
	gauges := gatherNames(t, reg)
	for _, name := range []string{"mica_mtls_crl_age_seconds", "mica_mtls_crl_fetch_errors_total"} {
		if !gauges[name] {
			t.Errorf("%s is not exported (got %v)", name, slices.Sorted(maps.Keys(gauges)))
		}
	}
}

// TestCRLNotTrusted: a CRL that no trusted issuer signed, or that goes
// back in number, changes nothing.
func TestCRLNotTrusted(t *testing.T) {
	pki := testpki.New(t, "example.org")
	forger := testpki.New(t, "example.org")
	leaf := pki.Leaf(t, pki.ID(t, clientPath))
	cs := newCRLServer(t)
	checker, err := mtls.NewCRLChecker(mtls.CRLConfig{URLs: []string{cs.URL}, Roots: func() []*x509.Certificate {
		// The intermediate is trusted here directly, so the checker needs
		// no handshake to learn it.
		return []*x509.Certificate{pki.Root, pki.Intermediate}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	cs.publish(t, pki, forger, 5, leaf.Cert.SerialNumber)
	if err := checker.Refresh(ctx); err == nil {
		t.Fatal("a CRL signed by another key was accepted")
	}
	if checker.Revoked(leaf.Cert) {
		t.Fatal("a forged CRL revoked a certificate")
	}

	cs.publish(t, pki, pki, 5)
	if err := checker.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	cs.publish(t, pki, pki, 4, leaf.Cert.SerialNumber)
	if err := checker.Refresh(ctx); err == nil {
		t.Fatal("a CRL with a lower number replaced a newer one")
	}
	if checker.Revoked(leaf.Cert) {
		t.Fatal("an older CRL was used")
	}

	if _, err := mtls.NewCRLChecker(mtls.CRLConfig{URLs: []string{"ldap://x"}, Roots: func() []*x509.Certificate { return nil }}); err == nil {
		t.Error("an ldap:// CRL URL was accepted")
	}
	if _, err := mtls.NewCRLChecker(mtls.CRLConfig{}); err == nil {
		t.Error("a checker without Roots was made")
	}
}

func errText(err error) string {
	if err == nil {
		return "accepted"
	}
	return err.Error()
}
