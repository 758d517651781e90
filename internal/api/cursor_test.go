package api_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/enginetest"
)

// inventory records certificates straight into the store, as a fleet
// would have left them, with lifetimes the test chooses: several share
// one expiry to the microsecond, so that the serial has to order them.
type inventory struct {
	t        *testing.T
	f        *authoritytest.Fixture
	issuerID string
}

func newInventory(t *testing.T, f *authoritytest.Fixture) *inventory {
	return &inventory{t: t, f: f, issuerID: authority.Fingerprint(f.PKI.Intermediate.Raw)}
}

// record writes one certificate (revoked when asked) and returns it.
func (inv *inventory) record(id, profile string, notAfter time.Time, revoked bool) store.Certificate {
	inv.t.Helper()
	sn, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	u, _ := url.Parse(id)
	notBefore := notAfter.Add(-72 * time.Hour)
	tmpl := &x509.Certificate{SerialNumber: sn, NotBefore: notBefore, NotAfter: notAfter, URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inv.f.PKI.Intermediate, inv.f.PKI.IntermediateKey.Public(), inv.f.PKI.IntermediateKey)
	if err != nil {
		inv.t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	c := store.Certificate{Serial: sn.Text(16), Fingerprint: hex.EncodeToString(sum[:]), Identity: id, SANs: []string{id},
		Profile: profile, Requester: authoritytest.AdminID, Owner: authoritytest.AdminID, ChainStartedAt: notBefore,
		NotBefore: notBefore, NotAfter: notAfter, Issuer: inv.issuerID, DER: der}
	iss := store.Issuance{Certificate: c, Event: store.Event{Time: notBefore, Actor: c.Requester, Action: store.ActionCertIssued,
		Serial: c.Serial, Fingerprint: c.Fingerprint, Identity: id, Profile: profile, Outcome: "ok"}}
	ctx := context.Background()
	if err := inv.f.Store.RecordIssuance(ctx, &iss); err != nil {
		inv.t.Fatal(err)
	}
	if revoked {
		ev := store.Event{Time: notBefore, Actor: c.Requester, Action: store.ActionCertRevoked, Serial: c.Serial,
			Fingerprint: c.Fingerprint, Identity: id, Profile: profile, Outcome: "ok"}
		if err := inv.f.Store.Revoke(ctx, c.Serial, 1, notBefore.Add(time.Hour), &ev); err != nil {
			inv.t.Fatal(err)
		}
		c.Status = store.StatusRevoked
	}
	return c
}

const pagedID = "spiffe://example.org/billing/paged"

// fill records 60 certificates in 20 groups of three sharing an expiry:
// 8 groups expired an hour or two ago, 12 expiring from 20 minutes to 2
// hours from now; three in four of pagedID, every fifth revoked, three
// profiles in turn.
func (inv *inventory) fill(now time.Time) {
	base := now.Truncate(time.Second)
	for i := range 60 {
		g := i / 3
		notAfter := base.Add(-2*time.Hour + time.Duration(g)*10*time.Minute)
		if g >= 8 {
			notAfter = base.Add(20*time.Minute + time.Duration(g-8)*10*time.Minute)
		}
		id := fmt.Sprintf("spiffe://example.org/billing/w%d", i)
		if i%4 != 3 {
			id = pagedID
		}
		inv.record(id, []string{"service", "web", "db"}[i%3], notAfter, i%5 == 0)
	}
}

// Walking the inventory page by page with a cursor lists every
// certificate that matched when the walk began exactly once, in order,
// while certificates are issued between the pages (some sorting before
// the walk's place, some sharing its expiry, some after it), on each
// engine and with each filter.
func TestCursorWalksEveryFilter(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		f := authoritytest.NewOn(t, st, nil)
		_, _, admin := serve(t, f)
		inv := newInventory(t, f)
		inv.fill(time.Now())
		ctx := context.Background()
		cases := []struct {
			name string
			lf   client.ListFilter
		}{
			{"everything", client.ListFilter{}},
			{"active", client.ListFilter{Status: "active"}},
			{"revoked", client.ListFilter{Status: "revoked"}},
			{"expired", client.ListFilter{Status: "expired"}},
			{"identity", client.ListFilter{Identity: pagedID}},
			{"profile", client.ListFilter{Profile: "web"}},
			{"expiring within", client.ListFilter{ExpiringWithin: "1h"}},
			{"profile and active", client.ListFilter{Profile: "service", Status: "active"}},
			{"identity and revoked", client.ListFilter{Identity: pagedID, Status: "revoked"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				inv.t = t
				// What matched before the walk: one read of every row.
				want := map[string]bool{}
				all, err := admin.ListCertificatesPage(ctx, withLimit(tc.lf, 10000))
				if err != nil || all.Next != "" {
					t.Fatalf("one read of everything: next %q, %v", all.Next, err)
				}
				for _, c := range all.Certificates {
					want[c.Serial] = true
				}
				seen := map[string]bool{}
				var last *client.Certificate
				lf := withLimit(tc.lf, 4)
				pages := 0
				maxPages := len(want)/4 + 10
				for ; pages < maxPages; pages++ {
					page, err := admin.ListCertificatesPage(ctx, lf)
					if err != nil {
						t.Fatalf("page %d: %v", pages, err)
					}
					if len(page.Certificates) > 4 || len(page.Certificates) == 0 && pages > 0 {
						t.Fatalf("page %d has %d certificates, want 1 to 4", pages, len(page.Certificates))
					}
					for i := range page.Certificates {
						c := &page.Certificates[i]
						if seen[c.Serial] {
							t.Errorf("page %d: %s listed twice", pages, c.Serial)
						}
						seen[c.Serial] = true
						if last != nil && !before(last, c) {
							t.Errorf("page %d: %s (%s) after %s (%s): out of order", pages, c.Serial, c.NotAfter, last.Serial, last.NotAfter)
						}
						if why := mismatch(tc.lf, c, time.Now()); why != "" {
							t.Errorf("page %d: %s does not match the filter: %s", pages, c.Serial, why)
						}
						last = c
					}
					if page.Next == "" {
						break
					}
					lf.Cursor = page.Next
					if pages >= 4 {
						continue
					}
					// Between the first pages: a certificate through the
					// authority (expiring in an hour), one recorded before
					// the walk's place, and one sharing its expiry.
					f.Issue(t, pagedID)
					inv.record(pagedID, "web", last.NotAfter.Add(-time.Minute), false)
					inv.record(pagedID, "service", last.NotAfter, false)
				}
				if pages+1 < 3 {
					t.Errorf("the walk took %d pages; the test wants more than 2", pages+1)
				}
				if pages == maxPages {
					t.Fatalf("no last page after %d", maxPages)
				}
				for s := range want {
					if !seen[s] {
						t.Errorf("%s matched before the walk and was not listed", s)
					}
				}
			})
		}
	})
}

func withLimit(f client.ListFilter, n int) client.ListFilter {
	f.Limit = n
	return f
}

// before reports whether a comes before b in the inventory's order.
func before(a, b *client.Certificate) bool {
	if !a.NotAfter.Equal(b.NotAfter) {
		return a.NotAfter.Before(b.NotAfter)
	}
	return a.Serial < b.Serial
}

// mismatch says why c does not match f at now (within the walk), or "".
func mismatch(f client.ListFilter, c *client.Certificate, now time.Time) string {
	switch {
	case f.Identity != "" && c.Identity != f.Identity:
		return "identity " + c.Identity
	case f.Profile != "" && c.Profile != f.Profile:
		return "profile " + c.Profile
	case f.Status == "revoked" && c.Status != "revoked",
		f.Status == "active" && (c.Status != "active" || c.NotAfter.Before(now.Add(-time.Minute))),
		f.Status == "expired" && (c.Status != "active" || c.NotAfter.After(now)):
		return fmt.Sprintf("status %s, expiring %s", c.Status, c.NotAfter)
	case f.ExpiringWithin == "1h" && !c.NotAfter.Before(now.Add(time.Hour)):
		return fmt.Sprintf("expires %s", c.NotAfter)
	}
	return ""
}

// A cursor that is not one the server made, or that was made for another
// filter, is a 400 problem that says to start again, never a 500 and
// never a page from somewhere else; so is an offset.
func TestCursorRefusals(t *testing.T) {
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		f := authoritytest.NewOn(t, st, nil)
		srv, _, admin := serve(t, f)
		inv := newInventory(t, f)
		inv.fill(time.Now())
		ctx := context.Background()
		first, err := admin.ListCertificatesPage(ctx, client.ListFilter{Profile: "web", Limit: 3})
		if err != nil || first.Next == "" {
			t.Fatalf("first page: next %q, %v", first.Next, err)
		}
		good := first.Next
		raw, err := base64.RawURLEncoding.DecodeString(good)
		if err != nil {
			t.Fatal(err)
		}
		edit := func(i int) string {
			b := append([]byte(nil), raw...)
			b[i] ^= 1
			return base64.RawURLEncoding.EncodeToString(b)
		}
		damaged := map[string]string{
			"not base64":              "!!!not-a-cursor!!!",
			"padded":                  good + "=",
			"standard alphabet":       strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+/",
			"truncated":               good[:len(good)-3],
			"one more byte":           base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), raw...), 0)),
			"another version":         edit(0),
			"another expiry":          edit(3),
			"another serial":          edit(11),
			"another filter tag":      edit(len(raw) - 6),
			"another check":           edit(len(raw) - 1),
			"too long":                strings.Repeat("A", 4096),
			"empty bytes":             base64.RawURLEncoding.EncodeToString(nil) + "AA",
			"a cursor from elsewhere": base64.RawURLEncoding.EncodeToString([]byte(`{"offset":1000}`)),
		}
		cs, _ := callers(t, srv, f) // enrolls a workload: before counting
		certsBefore, eventsBefore := counts(t, st)
		for name, cur := range damaged {
			_, err := admin.ListCertificatesPage(ctx, client.ListFilter{Profile: "web", Limit: 3, Cursor: cur})
			wantCursorProblem(t, name, err, "without cursor")
		}
		for name, lf := range map[string]client.ListFilter{
			"another profile":          {Profile: "db"},
			"no filter":                {},
			"a status added":           {Profile: "web", Status: "active"},
			"an identity added":        {Profile: "web", Identity: pagedID},
			"expiring within added":    {Profile: "web", ExpiringWithin: "7d"},
			"the profile's other case": {Profile: "Web"},
		} {
			lf.Cursor = good
			_, err := admin.ListCertificatesPage(ctx, lf)
			wantCursorProblem(t, name, err, "another filter")
		}
		// The same filter with another page size is the same listing.
		if _, err := admin.ListCertificatesPage(ctx, client.ListFilter{Profile: "web", Limit: 7, Cursor: good}); err != nil {
			t.Errorf("the cursor with another limit: %v", err)
		}
		for name, q := range map[string]string{
			"offset":         "profile=web&offset=3",
			"cursor twice":   "profile=web&cursor=" + good + "&cursor=" + good,
			"limit too high": "profile=web&limit=10001",
		} {
			status, h, body := cs[4].do(t, "GET", srv.URL+"/v1/certificates?"+q, "", nil)
			if status != http.StatusBadRequest {
				t.Errorf("%s: %d %s, want 400", name, status, body)
			}
			checkProblem(t, h, body)
		}
		// A refused cursor is refused before anything else is read; an
		// auditor may list, an unauthenticated caller learns nothing.
		if status, _, _ := cs[0].do(t, "GET", srv.URL+"/v1/certificates?cursor=x", "", nil); status != http.StatusUnauthorized {
			t.Errorf("anonymous with a cursor: %d, want 401", status)
		}
		if status, _, body := cs[2].do(t, "GET", srv.URL+"/v1/certificates?profile=web&cursor="+good, "", nil); status != http.StatusOK {
			t.Errorf("auditor with the cursor: %d %s", status, body)
		}
		if c, e := counts(t, st); c != certsBefore || e != eventsBefore {
			t.Errorf("refused listings changed the store: %d certificates, %d events; were %d, %d", c, e, certsBefore, eventsBefore)
		}
	})
}

func wantCursorProblem(t *testing.T, name string, err error, detail string) {
	t.Helper()
	var p *client.Problem
	switch {
	case !errors.As(err, &p):
		t.Errorf("%s: %v, want a problem", name, err)
	case p.Status != http.StatusBadRequest || p.Slug() != "invalid-cursor" || !strings.Contains(p.Detail, detail):
		t.Errorf("%s: %d %s %q, want 400 invalid-cursor saying %q", name, p.Status, p.Slug(), p.Detail, detail)
	}
}

func counts(t *testing.T, st store.Store) (certs, events int) {
	t.Helper()
	n, err := st.CountCertificates(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.Events(context.Background(), store.EventFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return n, len(evs)
}
