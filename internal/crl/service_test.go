package crl

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/store/storetest"
	"github.com/mica-pki/mica/internal/testpki"
)

// cluster is the PostgreSQL server of this test binary, started by the
// first test that asks for a database.
var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

const issuerID = "me"

func openSQLite(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// revoke records a certificate of issuer with serial (hex) that expires at
// notAfter, and revokes it with reason.
func revoke(t *testing.T, st store.Store, issuer, serial string, notAfter time.Time, reason int) {
	t.Helper()
	ctx := context.Background()
	iss := storetest.NewIssuance(0)
	c := &iss.Certificate
	c.Serial, c.Issuer, c.NotBefore, c.NotAfter = serial, issuer, notAfter.Add(-2*time.Hour), notAfter
	iss.Event.Serial = serial
	if err := st.RecordIssuance(ctx, iss); err != nil {
		t.Fatal(err)
	}
	ev := &store.Event{Time: now, Actor: "admin", Action: store.ActionCertRevoked, Serial: serial}
	if err := st.Revoke(ctx, serial, reason, now.Add(-time.Hour), ev); err != nil {
		t.Fatal(err)
	}
}

func newService(t *testing.T, st store.Store, pki *testpki.PKI, clock func() time.Time) *Service {
	t.Helper()
	s, err := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID, Clock: clock, Lint: issuance.LintCRL})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// get fetches the CRL from h with the request headers hdr.
func get(t *testing.T, h http.Handler, pki *testpki.PKI, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", Path(pki.Intermediate), nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// serials parses a CRL and lists its entries' serials in hex.
func serials(t *testing.T, der []byte) []string {
	t.Helper()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parse the CRL: %v", err)
	}
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, hex.EncodeToString(e.SerialNumber.Bytes()))
	}
	slices.Sort(out)
	return out
}

func TestService(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
	revoke(t, st, issuerID, "1a2b", now.Add(time.Hour), 1)
	revoke(t, st, issuerID, "0abc", now.Add(time.Hour), 0)
	revoke(t, st, issuerID, "ff", now.Add(-time.Minute), 1) // expired: drops off
	revoke(t, st, "someone-else", "cc", now.Add(time.Hour), 1)
	s := newService(t, st, pki, clock)
	h := s.Handler()
	if rec := get(t, h, pki); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("before the first build: %d, want 503", rec.Code)
	}
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := get(t, h, pki)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET: %d %q", rec.Code, rec.Header())
	}
	if got := serials(t, rec.Body.Bytes()); !slices.Equal(got, []string{"0abc", "1a2b"}) {
		t.Fatalf("entries %v, want 0abc and 1a2b", got)
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
			if got := get(t, h, pki, tc.header, tc.value).Code; got != tc.want {
				t.Errorf("%s: %s → %d, want %d", tc.header, tc.value, got, tc.want)
			}
		})
	}
}

// TestNumbersGrowAcrossRestarts builds CRLs in one second from a new
// Service each time, as a restarted server would, and from a reopened
// store: every number is larger than the one before.
func TestNumbersGrowAcrossRestarts(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	path := filepath.Join(t.TempDir(), "mica.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	last := new(big.Int)
	for i := range 6 {
		if i == 3 {
			st.Close()
			st = openSQLite(t, path)
		}
		s := newService(t, st, pki, clock)
		if err := s.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(s.Current().DER)
		if err != nil {
			t.Fatal(err)
		}
		if crl.Number.Cmp(last) <= 0 {
			t.Fatalf("build %d: CRL number %v is not above %v", i, crl.Number, last)
		}
		last = crl.Number
	}
}

// TestConditionalGetAfterRevocation: a client holding the CRL revalidates
// after a revocation made in the same second: it must get the new CRL
// with the new entry, whether it asks by ETag or by date.
func TestConditionalGetAfterRevocation(t *testing.T) {
	at := now
	clk := func() time.Time { return at }
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
	revoke(t, st, issuerID, "1a2b", now.Add(time.Hour), 1)
	s := newService(t, st, pki, clk)
	h := s.Handler()
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := get(t, h, pki)
	etag, lastModified := first.Header().Get("ETag"), first.Header().Get("Last-Modified")
	if etag == "" || lastModified == "" {
		t.Fatalf("first CRL: ETag %q, Last-Modified %q; want both", etag, lastModified)
	}

	revoke(t, st, issuerID, "3c4d", now.Add(time.Hour), 4)
	if err := s.RunOnce(context.Background()); err != nil { // same second
		t.Fatal(err)
	}
	want := []string{"1a2b", "3c4d"}
	for _, cond := range [][]string{{"If-None-Match", etag}, {"If-Modified-Since", lastModified}} {
		rec := get(t, h, pki, cond...)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %s after a revocation → %d, want 200 with the new CRL", cond[0], cond[1], rec.Code)
		}
		if got := serials(t, rec.Body.Bytes()); !slices.Equal(got, want) {
			t.Errorf("%s: entries %v, want %v", cond[0], got, want)
		}
		if rec.Header().Get("ETag") == etag {
			t.Errorf("%s: the new CRL has the old ETag %s", cond[0], etag)
		}
	}
	// The client now holds the second CRL, dated in the same second as the
	// first: by date it cannot tell which it holds, so it gets the CRL.
	second := get(t, h, pki)
	if !s.Current().SharesSecond {
		t.Error("the second CRL of one second does not say it shares it")
	}
	if rec := get(t, h, pki, "If-Modified-Since", second.Header().Get("Last-Modified")); rec.Code != http.StatusOK {
		t.Errorf("If-Modified-Since a date two CRLs share → %d, want 200", rec.Code)
	}
	if rec := get(t, h, pki, "If-None-Match", get(t, h, pki).Header().Get("ETag")); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the current ETag → %d, want 304", rec.Code)
	}

	at = at.Add(time.Second)
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	third := get(t, h, pki)
	if s.Current().SharesSecond {
		t.Fatal("the first CRL of a new second says it shares it")
	}
	if rec := get(t, h, pki, "If-Modified-Since", lastModified); rec.Code != http.StatusOK {
		t.Errorf("If-Modified-Since the first CRL's date → %d, want 200", rec.Code)
	}
	if rec := get(t, h, pki, "If-Modified-Since", third.Header().Get("Last-Modified")); rec.Code != http.StatusNotModified {
		t.Errorf("If-Modified-Since the current CRL's date → %d, want 304", rec.Code)
	}
}

// TestTwoServersOnePostgres is two servers (a store and a Service each)
// on one PostgreSQL database building the same issuer's CRL at once while
// certificates are revoked: no number is used twice, and a CRL with a
// larger number lists every entry of one with a smaller number.
func TestTwoServersOnePostgres(t *testing.T) {
	ctx := context.Background()
	url := cluster.Database(t)
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	var services []*Service
	var stores []*postgres.Store
	for range 2 {
		st, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
		services = append(services, newService(t, st, pki, clock))
	}
	const builds, revocations = 25, 20
	type built struct {
		number  *big.Int
		entries []string
	}
	var (
		mu  sync.Mutex
		all []built
		wg  sync.WaitGroup
	)
	wg.Go(func() {
		for i := range revocations {
			revoke(t, stores[i%2], issuerID, hex.EncodeToString([]byte{0x10, byte(i)}), now.Add(time.Hour), 1)
		}
	})
	for _, s := range services {
		wg.Go(func() {
			for range builds {
				if err := s.RunOnce(ctx); err != nil {
					t.Error(err)
					return
				}
				der := s.Current().DER
				crl, err := x509.ParseRevocationList(der)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, built{crl.Number, serials(t, der)})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b built) int { return a.number.Cmp(b.number) })
	for i := 1; i < len(all); i++ {
		if all[i].number.Cmp(all[i-1].number) == 0 {
			t.Fatalf("CRL number %v was given to two CRLs", all[i].number)
		}
		for _, serial := range all[i-1].entries {
			if !slices.Contains(all[i].entries, serial) {
				t.Fatalf("CRL %v lists %s and the later CRL %v does not", all[i-1].number, serial, all[i].number)
			}
		}
	}
	if len(all) != 2*builds {
		t.Errorf("%d CRLs built, want %d", len(all), 2*builds)
	}
}

// TestRebuildAfterSharedSecond: a CRL that shares its second with an
// earlier one is replaced in the next second, unless this server's clock
// is behind the other's; otherwise the schedule is half the validity.
func TestRebuildAfterSharedSecond(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	s := newService(t, openSQLite(t, filepath.Join(t.TempDir(), "mica.db")), pki, clock)
	half := 12 * time.Hour
	at := now.Add(300 * time.Millisecond)
	tests := []struct {
		name string
		cur  *Published
		want time.Duration
	}{
		{"None", nil, half},
		{"OwnSecond", &Published{ThisUpdate: now}, half - 300*time.Millisecond},
		{"SharesSecond", &Published{ThisUpdate: now, SharesSecond: true}, 700 * time.Millisecond},
		{"ClockBehind", &Published{ThisUpdate: now, SharesSecond: true, clockBehind: true}, half - 300*time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.nextWait(tc.cur, at); got != tc.want {
				t.Errorf("nextWait = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCacheControlFollowsTheClock: caches may keep the CRL until the next
// scheduled build (half its validity) and five minutes at most, by the
// Service's clock.
func TestCacheControlFollowsTheClock(t *testing.T) {
	at := now
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	s := newService(t, openSQLite(t, filepath.Join(t.TempDir(), "mica.db")), pki, func() time.Time { return at })
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	half := s.Current().ThisUpdate.Add(12 * time.Hour)
	tests := []struct {
		at   time.Time
		want string
	}{
		{now, "public, max-age=300"},
		{half.Add(-100 * time.Second), "public, max-age=100"},
		{half.Add(time.Minute), "public, max-age=0"},
	}
	for _, tc := range tests {
		at = tc.at
		if got := get(t, s.Handler(), pki).Header().Get("Cache-Control"); got != tc.want {
			t.Errorf("at %v: Cache-Control %q, want %q", tc.at, got, tc.want)
		}
	}
}

// TestLintMaxEntries: CRLs up to the limit are linted before publication,
// larger ones are published without the linter's whole-list parse.
func TestLintMaxEntries(t *testing.T) {
	pki := testpki.New(t, "example.org", testpki.WithClock(clock))
	st := openSQLite(t, filepath.Join(t.TempDir(), "mica.db"))
	linted := 0
	lint := func(der []byte) error { linted++; return issuance.LintCRL(der) }
	s, err := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID, Clock: clock,
		Lint: lint, LintMaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 2, 3, 3} { // entries 0, 1, 2, 3
		if err := s.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if linted != want {
			t.Errorf("CRL with %d entries: %d lint runs so far, want %d", i, linted, want)
		}
		revoke(t, st, issuerID, fmt.Sprintf("%x", 0x100+i), now.Add(time.Hour), 1)
	}
	if d, _ := New(Config{Source: st, Issuer: pki.Intermediate, Signer: issuance.NewCRLSigner(pki.Intermediate, pki.IntermediateKey), IssuerID: issuerID}); d.cfg.LintMaxEntries != DefaultLintMaxEntries {
		t.Errorf("default LintMaxEntries = %d, want %d", d.cfg.LintMaxEntries, DefaultLintMaxEntries)
	}
}
