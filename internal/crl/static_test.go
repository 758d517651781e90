package crl

import (
	"bytes"
	"github.com/mica-pki/mica/internal/issuance"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/testpki"
)

// TestStaticHandler: the root CRL file is served once it exists, replaced
// when the file changes, and never served when it is not the issuer's.
func TestStaticHandler(t *testing.T) {
	pki := testpki.New(t, "example.org")
	other := testpki.New(t, "example.org")
	path := filepath.Join(t.TempDir(), "root.crl")
	srv := httptest.NewServer(StaticHandler(path, pki.Root))
	defer srv.Close()

	get := func() (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	sign := func(p *testpki.PKI, number int64) []byte {
		t.Helper()
		der, err := Build(Params{Issuer: p.Root, Signer: issuance.NewCRLSigner(p.Root, p.RootKey), Number: big.NewInt(number),
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	write := func(der []byte, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(path, der, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}

	if code, _ := get(); code != http.StatusNotFound {
		t.Fatalf("no file: status %d, want 404", code)
	}
	write(sign(other, 1), time.Now().Add(-3*time.Hour))
	if code, _ := get(); code != http.StatusNotFound {
		t.Fatalf("another CA's CRL: status %d, want 404", code)
	}
	first := sign(pki, 1)
	write(first, time.Now().Add(-2*time.Hour))
	if code, body := get(); code != http.StatusOK || string(body) != string(first) {
		t.Fatalf("root CRL: status %d, served the file: %v", code, string(body) == string(first))
	}
	second := sign(pki, 2)
	write(second, time.Now().Add(-time.Hour))
	if code, body := get(); code != http.StatusOK || string(body) != string(second) {
		t.Fatalf("replaced root CRL: status %d, served the new file: %v", code, string(body) == string(second))
	}
	write([]byte("not a CRL"), time.Now())
	if code, body := get(); code != http.StatusOK || string(body) != string(second) {
		t.Fatalf("broken file: status %d, still serving the last good CRL: %v", code, string(body) == string(second))
	}
}

// TestStaticPastNextUpdate: a root CRL past its nextUpdate is still served
// (it is the root's latest word) but marked stale and not cacheable, and
// Current reports its dates for the freshness metric; before then no cache
// may keep it past nextUpdate.
func TestStaticPastNextUpdate(t *testing.T) {
	pki := testpki.New(t, "example.org")
	path := filepath.Join(t.TempDir(), "root.crl")
	this := time.Now().Truncate(time.Second).Add(-time.Hour)
	next := this.Add(time.Hour + 2*time.Minute)
	der, err := Build(Params{Issuer: pki.Root, Signer: issuance.NewCRLSigner(pki.Root, pki.RootKey), Number: big.NewInt(7), ThisUpdate: this, NextUpdate: next}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o644); err != nil {
		t.Fatal(err)
	}
	now := this.Add(time.Hour)
	var logged strings.Builder
	s := NewStatic(path, pki.Root, func() time.Time { return now }, slog.New(slog.NewTextHandler(&logged, nil)))
	get := func() *http.Response {
		t.Helper()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/crl/root.crl", nil))
		return rec.Result()
	}
	gotThis, gotNext, ok := s.Current()
	if !ok || !gotThis.Equal(this) || !gotNext.Equal(next) {
		t.Fatalf("Current = %v %v %v, want %v %v", gotThis, gotNext, ok, this, next)
	}
	resp := get()
	if cc := resp.Header.Get("Cache-Control"); resp.StatusCode != http.StatusOK || cc != "public, max-age=120" || resp.Header.Get(StaleHeader) != "" {
		t.Errorf("two minutes before nextUpdate: %s, Cache-Control %q, stale %q; want 200, max-age=120, not stale",
			resp.Status, cc, resp.Header.Get(StaleHeader))
	}
	now = next.Add(time.Minute)
	resp = get()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, der) {
		t.Fatalf("past nextUpdate: %s, want the CRL still served", resp.Status)
	}
	if resp.Header.Get(StaleHeader) != next.UTC().Format(time.RFC3339) || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("past nextUpdate: %s %q, Cache-Control %q; want it marked stale and not cacheable",
			StaleHeader, resp.Header.Get(StaleHeader), resp.Header.Get("Cache-Control"))
	}
	get()
	if n := strings.Count(logged.String(), "past its nextUpdate"); n != 1 {
		t.Errorf("the stale CRL was logged %d times, want once per file:\n%s", n, logged.String())
	}
}
