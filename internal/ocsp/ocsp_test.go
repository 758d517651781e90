package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

type fakeSource struct {
	mu    sync.Mutex
	certs map[string]store.Certificate
	reads int
}

func (f *fakeSource) Certificate(_ context.Context, serial string) (store.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	c, ok := f.certs[serial]
	if !ok {
		return c, store.ErrNotFound
	}
	return c, nil
}

func (f *fakeSource) set(c store.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.certs[c.Serial] = c
}

// withNonce adds a requestExtensions nonce to a request made by x/crypto.
func withNonce(t *testing.T, req, nonce []byte) []byte {
	t.Helper()
	in := cryptobyte.String(req)
	var outer, tbs cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !outer.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		t.Fatal("cannot re-read the request")
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			b.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier(oidNonce))
						b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1OctetString(nonce) })
					})
				})
			})
		})
	})
	return b.BytesOrPanic()
}

// responderFunc certifies responder keys with the test PKI's issuer, the
// way authority.IssueOCSPResponder does with the serving CA's.
func responderFunc(t testing.TB, pki *testpki.PKI) ResponderFunc {
	return func(_ context.Context, pub crypto.PublicKey) (*x509.Certificate, error) {
		now := time.Now()
		na := now.Add(7 * 24 * time.Hour)
		if na.After(pki.Intermediate.NotAfter) {
			na = pki.Intermediate.NotAfter
		}
		return pki.Issuer.Issue(issuance.Request{PublicKey: pub, Identity: pki.ID(t, "/mica/ocsp/test"), NotBefore: now.Add(-time.Minute), NotAfter: na,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
	}
}

func TestResponder(t *testing.T) {
	pki := testpki.New(t, "example.org")
	good := pki.Leaf(t, pki.ID(t, "/good"))
	revoked := pki.Leaf(t, pki.ID(t, "/revoked"))
	unknown := pki.Leaf(t, pki.ID(t, "/unknown"))
	other := testpki.New(t, "example.org")
	foreign := other.Leaf(t, other.ID(t, "/foreign"))
	issuerID := authority.Fingerprint(pki.Intermediate.Raw)
	revokedAt := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	src := &fakeSource{certs: map[string]store.Certificate{
		authority.SerialHex(good.Cert):    {Serial: authority.SerialHex(good.Cert), Issuer: issuerID, Status: store.StatusActive},
		authority.SerialHex(revoked.Cert): {Serial: authority.SerialHex(revoked.Cert), Issuer: issuerID, Status: store.StatusRevoked, RevokedAt: revokedAt, RevocationReason: 1},
	}}
	r, err := New(Config{Source: src, Issuer: pki.Intermediate, IssuerID: issuerID, Responder: responderFunc(t, pki)})
	if err != nil {
		t.Fatal(err)
	}
	rc := r.ResponderCertificate()
	if err := rc.CheckSignatureFrom(pki.Intermediate); err != nil || len(rc.ExtKeyUsage) != 1 || rc.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
		t.Fatalf("responder certificate: %v, EKU %v", err, rc.ExtKeyUsage)
	}
	nocheck := false
	for _, e := range rc.Extensions {
		nocheck = nocheck || e.Id.Equal(oidNoCheck)
	}
	if !nocheck || len(rc.CRLDistributionPoints) != 0 || len(rc.OCSPServer) != 0 {
		t.Fatalf("responder certificate: ocsp-nocheck %v, CRL %v, OCSP %v; want nocheck and no revocation pointers", nocheck, rc.CRLDistributionPoints, rc.OCSPServer)
	}
	tests := []struct {
		name       string
		leaf       *x509.Certificate
		issuer     *x509.Certificate
		wantStatus int
		wantReason int
	}{
		{"Good", good.Cert, pki.Intermediate, xocsp.Good, 0},
		{"Revoked", revoked.Cert, pki.Intermediate, xocsp.Revoked, 1},
		{"Unknown", unknown.Cert, pki.Intermediate, xocsp.Unknown, 0},
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reqDER, err := xocsp.CreateRequest(tc.leaf, tc.issuer, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, method := range []string{"POST", "GET"} {
				var resp *http.Response
				if method == "POST" {
					resp, err = http.Post(srv.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(reqDER))
				} else {
					resp, err = http.Get(srv.URL + "/ocsp/" + base64.StdEncoding.EncodeToString(reqDER))
				}
				if err != nil {
					t.Fatal(err)
				}
				var body bytes.Buffer
				body.ReadFrom(resp.Body)
				resp.Body.Close()
				parsed, err := xocsp.ParseResponseForCert(body.Bytes(), tc.leaf, tc.issuer)
				if err != nil {
					t.Fatalf("%s: parse: %v", method, err)
				}
				if parsed.Status != tc.wantStatus || (tc.wantStatus == xocsp.Revoked && (parsed.RevocationReason != tc.wantReason || !parsed.RevokedAt.Equal(revokedAt))) {
					t.Errorf("%s: status %d reason %d at %v; want %d %d %v", method, parsed.Status, parsed.RevocationReason, parsed.RevokedAt, tc.wantStatus, tc.wantReason, revokedAt)
				}
				if !parsed.Certificate.Equal(rc) {
					t.Errorf("%s: response not signed by the delegated responder", method)
				}
				if tc.wantStatus != xocsp.Unknown && resp.Header.Get("ETag") == "" {
					t.Errorf("%s: no caching headers: %v", method, resp.Header)
				}
			}
		})
	}
	t.Run("CacheStats", func(t *testing.T) {
		// Good and Revoked were answered and cached (Unknown is never).
		st := r.CacheStats()
		if st.Responses != 2 || st.Oldest.IsZero() || time.Since(st.Oldest) > time.Hour || time.Since(st.Oldest) < 0 {
			t.Errorf("CacheStats = %+v, want 2 responses produced just now", st)
		}
	})
	t.Run("ForeignIssuerUnauthorized", func(t *testing.T) {
		reqDER, _ := xocsp.CreateRequest(foreign.Cert, other.Intermediate, nil)
		if got := r.Respond(context.Background(), reqDER); !bytes.Equal(got, errorResponse(statusUnauthorized)) {
			t.Errorf("got %x, want unauthorized", got)
		}
	})
	t.Run("Malformed", func(t *testing.T) {
		if got := r.Respond(context.Background(), []byte("garbage")); !bytes.Equal(got, errorResponse(statusMalformedRequest)) {
			t.Errorf("got %x, want malformedRequest", got)
		}
	})
	t.Run("NonceEchoed", func(t *testing.T) {
		reqDER, _ := xocsp.CreateRequest(good.Cert, pki.Intermediate, nil)
		nonce := []byte("0123456789abcdef")
		der := r.Respond(context.Background(), withNonce(t, reqDER, nonce))
		if _, err := xocsp.ParseResponseForCert(der, good.Cert, pki.Intermediate); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(der, nonce) {
			t.Error("the response does not carry the request's nonce")
		}
	})
	t.Run("NonceLength", func(t *testing.T) {
		reqDER, _ := xocsp.CreateRequest(good.Cert, pki.Intermediate, nil)
		for _, n := range []int{0, 33, 100} {
			if got := r.Respond(context.Background(), withNonce(t, reqDER, bytes.Repeat([]byte{7}, n))); !bytes.Equal(got, errorResponse(statusMalformedRequest)) {
				t.Errorf("a %d-octet nonce: got %x, want malformedRequest (RFC 8954)", n, got)
			}
		}
		if got := r.Respond(context.Background(), withNonce(t, reqDER, bytes.Repeat([]byte{7}, 32))); bytes.Equal(got, errorResponse(statusMalformedRequest)) {
			t.Error("a 32-octet nonce was refused")
		}
	})
	t.Run("CachedThenRevoked", func(t *testing.T) {
		reqDER, _ := xocsp.CreateRequest(good.Cert, pki.Intermediate, nil)
		first := r.Respond(context.Background(), reqDER)
		reads := src.reads
		if again := r.Respond(context.Background(), reqDER); !bytes.Equal(first, again) || src.reads != reads {
			t.Fatal("a second request for the same certificate was not answered from the cache")
		}
		c := src.certs[authority.SerialHex(good.Cert)]
		c.Status, c.RevokedAt, c.RevocationReason = store.StatusRevoked, revokedAt, 4
		src.set(c)
		r.Changed(context.Background(), c.Serial)
		parsed, err := xocsp.ParseResponseForCert(r.Respond(context.Background(), reqDER), good.Cert, pki.Intermediate)
		if err != nil || parsed.Status != xocsp.Revoked || parsed.RevocationReason != 4 {
			t.Fatalf("after Changed: %+v, %v; want revoked, superseded", parsed, err)
		}
	})
}
