package crl

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

type fakeSource []store.Revoked

func (f fakeSource) RevokedCertificates(_ context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error {
	for _, r := range f {
		if r.Issuer == issuer && !r.NotAfter.Before(validAt) {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestService(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	src := fakeSource{
		{Serial: "1a2b", Issuer: "me", RevokedAt: now.Add(-time.Hour), Reason: 1, NotAfter: now.Add(time.Hour)},
		{Serial: "abc", Issuer: "me", RevokedAt: now.Add(-time.Hour), Reason: 0, NotAfter: now.Add(time.Hour)},
		{Serial: "ff", Issuer: "me", RevokedAt: now.Add(-3 * time.Hour), NotAfter: now.Add(-time.Hour)}, // expired: drops off
		{Serial: "cc", Issuer: "someone-else", RevokedAt: now, NotAfter: now.Add(time.Hour)},
	}
	s, err := New(Config{Source: src, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: "me", Clock: clock, Lint: issuance.LintCRL})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", Path(pki.Intermediate), nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("before the first build: %d, want 503", rec.Code)
	}
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := s.Current()
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.Current().Number.Cmp(first.Number) <= 0 {
		t.Errorf("CRL number %v did not grow past %v", s.Current().Number, first.Number)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", Path(pki.Intermediate), nil))
	crl, err := x509.ParseRevocationList(rec.Body.Bytes())
	if rec.Code != 200 || err != nil || len(crl.RevokedCertificateEntries) != 2 || rec.Header().Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET: %d %v %q", rec.Code, err, rec.Header())
	}
	tests := []struct {
		name   string
		header string
		value  string
		want   int
	}{
		{"SameETag", "If-None-Match", rec.Header().Get("ETag"), http.StatusNotModified},
		{"OtherETag", "If-None-Match", `"0"`, http.StatusOK},
		{"NotModifiedSince", "If-Modified-Since", rec.Header().Get("Last-Modified"), http.StatusNotModified},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", Path(pki.Intermediate), nil)
			req.Header.Set(tc.header, tc.value)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("%s: %s → %d, want %d", tc.header, tc.value, rec.Code, tc.want)
			}
		})
	}
}
