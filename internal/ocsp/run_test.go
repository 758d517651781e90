package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// TestRunKeepsResponsesFresh runs the responder for a simulated day on the
// synctest clock: no cached response is ever older than half its
// validity, the responder certificate is renewed at two thirds of its
// life, and the responses are then signed by the new one.
func TestRunKeepsResponsesFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := testpki.New(t, "example.org")
		good := pki.Leaf(t, pki.ID(t, "/good"))
		issuerID := authority.Fingerprint(pki.Intermediate.Raw)
		src := &fakeSource{certs: map[string]store.Certificate{
			authority.SerialHex(good.Cert): {Serial: authority.SerialHex(good.Cert), Issuer: issuerID, Status: store.StatusActive},
		}}
		const validity, lifetime = time.Hour, 6 * time.Hour
		r, err := New(Config{Source: src, Issuer: pki.Intermediate, IssuerID: issuerID,
			Responder: responderLasting(t, pki, lifetime), Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })

		reqDER, err := xocsp.CreateRequest(good.Cert, pki.Intermediate, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Respond(ctx, reqDER) // now cached
		firstResponder := r.ResponderCertificate()
		start := time.Now()
		step := validity / 8 // Run's tick
		for now := start; now.Sub(start) < 24*time.Hour; now = now.Add(step) {
			time.Sleep(step)
			synctest.Wait()
			st := r.CacheStats()
			if st.Responses != 1 {
				t.Fatalf("at %v: %d cached responses, want 1", time.Since(start), st.Responses)
			}
			if age := time.Since(st.Oldest); age > validity/2 {
				t.Fatalf("at %v: the cached response is %v old, past half its validity (%v)", time.Since(start), age, validity/2)
			}
		}

		rc := r.ResponderCertificate()
		if rc.Equal(firstResponder) {
			t.Fatal("the responder certificate was never renewed in a day, with a 6h life")
		}
		// Renewed at two thirds of each life (4h, 8h, …): the current one
		// was issued at 24h, a minute backdated.
		if want := start.Add(24*time.Hour - time.Minute); !rc.NotBefore.Equal(want) {
			t.Errorf("current responder certificate from %v, want from %v", rc.NotBefore, want)
		}
		parsed, err := xocsp.ParseResponseForCert(r.Respond(ctx, reqDER), good.Cert, pki.Intermediate)
		if err != nil || !parsed.Certificate.Equal(rc) || parsed.Status != xocsp.Good {
			t.Errorf("the cached response after renewals: %v; want Good, signed by the current responder", err)
		}
	})
}

// responderLasting is responderFunc with responder certificates that last
// life, backdated a minute.
func responderLasting(t *testing.T, pki *testpki.PKI, life time.Duration) ResponderFunc {
	return func(_ context.Context, pub crypto.PublicKey) (*x509.Certificate, error) {
		now := time.Now()
		return pki.Issuer.Issue(issuance.Request{PublicKey: pub, Identity: pki.ID(t, "/mica/ocsp/test"), NotBefore: now.Add(-time.Minute),
			NotAfter: now.Add(life - time.Minute), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
	}
}

// TestCachingHeadersFollowTheClock: HTTP caches may keep a response half
// of what is left of its validity, by the responder's clock.
func TestCachingHeadersFollowTheClock(t *testing.T) {
	pki := testpki.New(t, "example.org")
	good := pki.Leaf(t, pki.ID(t, "/good"))
	issuerID := authority.Fingerprint(pki.Intermediate.Raw)
	src := &fakeSource{certs: map[string]store.Certificate{
		authority.SerialHex(good.Cert): {Serial: authority.SerialHex(good.Cert), Issuer: issuerID, Status: store.StatusActive},
	}}
	now := time.Now().Truncate(time.Second)
	r, err := New(Config{Source: src, Issuer: pki.Intermediate, IssuerID: issuerID, Responder: responderFunc(t, pki),
		Validity: time.Hour, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	reqDER, _ := xocsp.CreateRequest(good.Cert, pki.Intermediate, nil)
	get := func() string {
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ocsp/"+base64.StdEncoding.EncodeToString(reqDER), nil))
		if rec.Code != http.StatusOK || !bytes.HasPrefix(rec.Body.Bytes(), []byte{0x30}) {
			t.Fatalf("GET: %d", rec.Code)
		}
		return rec.Header().Get("Cache-Control")
	}
	if got, want := get(), "max-age=1800, public, no-transform, must-revalidate"; got != want {
		t.Errorf("just signed: Cache-Control %q, want %q", got, want)
	}
	now = now.Add(40 * time.Minute) // still served from the cache, 20 minutes left
	if got, want := get(), "max-age=600, public, no-transform, must-revalidate"; got != want {
		t.Errorf("40 minutes later: Cache-Control %q, want %q", got, want)
	}
}
