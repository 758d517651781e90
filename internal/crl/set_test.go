package crl

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/testpki"
)

// TestSet: every CA of a rotation has its CRL at its own path, each
// listing its own revocations; a CA taken out of the bundle is no longer
// published.
func TestSet(t *testing.T) {
	a, b, src := twoIssuers(t)
	revoke(t, src, "a", "0a", clock().Add(time.Hour), 1)
	var svcs []*Service
	for id, p := range map[string]*testpki.PKI{"a": a, "b": b} {
		svcs = append(svcs, builtService(t, src, p, id, 0))
	}
	set := NewSet()
	set.Sync(svcs, nil)
	srv := httptest.NewServer(set.Handler())
	defer srv.Close()
	get := func(issuer *x509.Certificate) (*x509.RevocationList, int) {
		resp, err := http.Get(srv.URL + Path(issuer))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, resp.StatusCode
		}
		list, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := list.CheckSignatureFrom(issuer); err != nil {
			t.Fatal(err)
		}
		return list, 200
	}
	for issuer, want := range map[*x509.Certificate]int{a.Intermediate: 1, b.Intermediate: 2} {
		list, code := get(issuer)
		if code != 200 || len(list.RevokedCertificateEntries) != want {
			t.Errorf("%s: status %d, %v entries; want %d", issuer.Subject.CommonName, code, list, want)
		}
	}
	keep := svcs[0]
	set.Sync([]*Service{keep}, nil)
	gone := b.Intermediate
	if keep.cfg.Issuer == b.Intermediate {
		gone = a.Intermediate
	}
	if _, code := get(gone); code != 404 {
		t.Errorf("a CA out of the bundle: status %d, want 404", code)
	}
	if set.Serves(Path(gone)) || !set.Serves(Path(keep.cfg.Issuer)) {
		t.Errorf("Serves: %v for the CA out of the bundle, %v for the CA kept; want false, true", set.Serves(Path(gone)), set.Serves(Path(keep.cfg.Issuer)))
	}
	if _, code := get(keep.cfg.Issuer); code != 200 {
		t.Errorf("the CA kept: status %d, want 200", code)
	}
}

// The freshness the metrics watch is the stalest CRL's, and its entries
// are every issuer's: with two issuers it never shows one issuer's count
// as if it were the whole.
func TestSetFreshness(t *testing.T) {
	a, b, src := twoIssuers(t)
	set := NewSet()
	if _, _, _, ok := set.Freshness(); ok {
		t.Fatal("Freshness of an empty set is ok")
	}
	svcs := []*Service{builtService(t, src, a, "a", time.Hour), builtService(t, src, b, "b", 24*time.Hour)}
	set.Sync(svcs, nil)
	this, next, entries, ok := set.Freshness()
	if !ok || entries != 2 || !next.Equal(svcs[0].Current().NextUpdate) || !this.Equal(svcs[0].Current().ThisUpdate) {
		t.Errorf("Freshness = %v, %v, %d entries, %v; want issuer a's times (the stalest) and 2 entries (a's 0 and b's 2)", this, next, entries, ok)
	}
}

// twoIssuers is two PKIs on one clock and a store in which issuer "b"
// has revoked two certificates ("0b", "0c") and issuer "a" none.
func twoIssuers(t *testing.T) (a, b *testpki.PKI, src *sqlite.Store) {
	t.Helper()
	a, b = testpki.New(t, "example.org", testpki.WithClock(clock)), testpki.New(t, "example.org", testpki.WithClock(clock))
	src = openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
	revoke(t, src, "b", "0b", clock().Add(time.Hour), 1)
	revoke(t, src, "b", "0c", clock().Add(time.Hour), 1)
	return a, b, src
}

// builtService is issuer p's CRL service over src, as id, with the given
// validity (0: the default), its first CRL built.
func builtService(t *testing.T, src Source, p *testpki.PKI, id string, validity time.Duration) *Service {
	t.Helper()
	svc, err := New(Config{Source: src, Issuer: p.Intermediate, Signer: issuance.NewCRLSigner(p.Intermediate, p.IntermediateKey),
		IssuerID: id, Clock: clock, Validity: validity, Lint: issuance.LintCRL})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc
}
