package crl

import (
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
		der, err := Build(Params{Issuer: p.Root, Signer: p.RootKey, Number: big.NewInt(number),
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
