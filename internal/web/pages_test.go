package web_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/web"
)

// How the console holds up with many certificates: the test in the suite
// loads a test-sized inventory and checks that no page grows with it
// (bounded rows and bytes, aggregates that agree with the store); the
// benchmark measures each page's server time (the handler, without TLS or
// the network) at any size, with the p95 of its runs:
//
//	go test -run x -bench Pages -benchtime 20x ./internal/web -console.certificates 1000000 -console.db /var/tmp/console-1m.db
//
// -console.db keeps the loaded store for the next run (the CA it was
// signed with is not kept: chains of loaded certificates then show no
// intermediate). Timings are reported, never asserted.

var (
	consoleCerts = flag.Int("console.certificates", 20000, "certificates the page tests load")
	consoleDB    = flag.String("console.db", "", "SQLite file to load into, or to reuse when it holds -console.certificates")
)

// bigConsole is a harness over a loaded inventory, with a session.
type bigConsole struct {
	h      *harness
	l      *loaded
	n      int
	cookie *http.Cookie
}

func newBigConsole(tb testing.TB) *bigConsole {
	tb.Helper()
	n := *consoleCerts
	var st store.Store
	reuse := false
	if *consoleDB != "" {
		_, err := os.Stat(*consoleDB)
		reuse = err == nil
		s, err := sqlite.Open(context.Background(), *consoleDB)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		st = s
	}
	h := newHarnessOn(tb, st)
	b := &bigConsole{h: h, n: n}
	start := time.Now()
	have, _ := h.f.Store.CountCertificates(context.Background(), store.Filter{})
	if reuse && have >= n {
		b.l = &loaded{}
		// A sample of what is there, for the pages that name one.
		for _, off := range []int{0, n / 4, n / 2, 3 * n / 4} {
			cs, err := h.f.Store.ListCertificates(context.Background(), store.Filter{Offset: off, Limit: 10})
			if err != nil {
				tb.Fatal(err)
			}
			b.l.sample = append(b.l.sample, cs...)
		}
		tb.Logf("reusing %d certificates in %s", have, *consoleDB)
	} else {
		from := 0
		if reuse {
			from = have // go on where an interrupted load stopped
		}
		b.l = load(tb, h.f.Store, h.f.PKI, from, n, time.Now())
		tb.Logf("loaded %d certificates (%d revoked) in %s", n-from, b.l.revoked, time.Since(start).Round(time.Second))
	}
	// A session, signed in the way a browser does.
	br := h.newBrowser()
	br.signIn(h.link(h.adminCred()))
	u, _ := url.Parse(h.url)
	for _, c := range br.hc.Jar.Cookies(u) {
		b.cookie = c
	}
	return b
}

// page is one console page the measurements visit; path picks its URL
// for the i-th run.
type measured struct {
	name string
	path func(i int) string
}

func (b *bigConsole) pages() []measured {
	pick := func(i int) store.Certificate { return b.l.sample[i%len(b.l.sample)] }
	return []measured{
		{"overview", func(int) string { return "/ui/" }},
		{"inventory", func(int) string { return "/ui/certificates" }},
		{"inventory-profile", func(i int) string { return "/ui/certificates?profile=" + fleets[i%len(fleets)].profile }},
		{"inventory-owner-7d", func(i int) string {
			return "/ui/certificates?expires=7d&owner=" + url.QueryEscape(owners[i%len(owners)])
		}},
		{"inventory-deep", func(i int) string {
			return fmt.Sprintf("/ui/certificates?offset=%d", rand.IntN(min(b.n, 100_000)/50)*50)
		}},
		{"search-identity", func(i int) string { return "/ui/certificates?q=" + url.QueryEscape(pick(i).Identity) }},
		{"search-serial", func(i int) string { return "/ui/certificates?q=" + pick(i).Serial }},
		{"certificate", func(i int) string { return "/ui/certificates/" + pick(i).Serial }},
		{"timeline", func(int) string { return "/ui/timeline" }},
		{"revocations", func(i int) string { return "/ui/revocations" }},
		{"audit", func(int) string { return "/ui/audit" }},
		{"audit-search", func(i int) string { return "/ui/audit?action=cert.revoked&since=1d" }},
		{"approvals", func(int) string { return "/ui/approvals" }},
		{"report-7d", func(int) string { return "/ui/report?within=7d" }},
		{"report-csv-7d", func(int) string { return "/ui/report.csv?within=7d" }},
	}
}

// get serves one request straight from the console's handler and says
// how long the server took.
func (b *bigConsole) get(tb testing.TB, console http.Handler, path string) (*httptest.ResponseRecorder, time.Duration) {
	tb.Helper()
	req := httptest.NewRequest("GET", b.h.url+path, nil)
	req.AddCookie(b.cookie)
	rec := httptest.NewRecorder()
	start := time.Now()
	console.ServeHTTP(rec, req)
	took := time.Since(start)
	if rec.Code != http.StatusOK {
		tb.Fatalf("GET %s: %d\n%.2000s", path, rec.Code, rec.Body.String())
	}
	return rec, took
}

// p95 is the 95th percentile of ds (nearest rank).
func p95(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*95+99)/100-1]
}

var tableRow = regexp.MustCompile(`<tr>\s*<td class="ident"><a href="/ui/certificates/`)

// No page grows with the inventory: the inventory shows a page of 50 and
// offers the next, every page stays small, and the aggregates agree with
// the store.
func TestPagesStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("loads an inventory (not in -short)")
	}
	b := newBigConsole(t)
	ctx := context.Background()
	var times []string
	for _, p := range b.pages() {
		var ds []time.Duration
		for i := range 5 {
			rec, took := b.get(t, b.h.console, p.path(i))
			ds = append(ds, took)
			if size := rec.Body.Len(); size > 512<<10 && !strings.HasPrefix(p.name, "report") {
				t.Errorf("%s is %d bytes: a page must not ship the inventory", p.name, size)
			}
			if strings.HasPrefix(p.name, "inventory") {
				if rows := len(tableRow.FindAllString(rec.Body.String(), -1)); rows > 50 {
					t.Errorf("%s lists %d certificates, more than a page", p.name, rows)
				}
			}
		}
		times = append(times, fmt.Sprintf("%s %s", p.name, p95(ds).Round(time.Microsecond)))
	}
	t.Logf("p95 server time of 5 runs with %d certificates (informational; load average %s): %s", b.n, loadAverage(), strings.Join(times, ", "))

	rec, _ := b.get(t, b.h.console, "/ui/certificates")
	if rows := len(tableRow.FindAllString(rec.Body.String(), -1)); rows != 50 || !strings.Contains(rec.Body.String(), `id="next-page"`) {
		t.Errorf("the first inventory page lists %d certificates, want 50 and a next page", rows)
	}
	// The timeline's total is the store's count of live certificates
	// expiring in the window. Loaded certificates expire every few
	// seconds, so the count is taken just before and just after a fresh
	// console (no cached aggregate) draws the timeline, and the total must
	// lie between them.
	count := func(now time.Time) int {
		from := now.UTC().Truncate(24 * time.Hour)
		n, err := b.h.f.Store.CountCertificates(ctx, store.Filter{Status: store.StatusActive, Now: now, ExpiresBefore: from.AddDate(0, 0, 90)})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	fresh, err := web.New(web.Config{Authority: b.h.f.Authority, TrustDomain: "example.org", Metrics: b.h.registry})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	most := count(before)
	rec, _ = b.get(t, fresh, "/ui/timeline")
	after := time.Now()
	least := count(after)
	m := regexp.MustCompile(`id="timeline-total"><strong>([^<]*)</strong> certificates expire`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		t.Fatalf("the timeline shows no total:\n%.2000s", rec.Body.String())
	}
	shown, err := strconv.Atoi(strings.ReplaceAll(m[1], "\u202f", ""))
	switch {
	case err != nil:
		t.Errorf("the timeline's total %q is not a number: %v", m[1], err)
	case before.UTC().Truncate(24*time.Hour) != after.UTC().Truncate(24*time.Hour):
		t.Log("midnight passed while drawing the timeline: its total is not compared")
	case shown < least || shown > most:
		t.Errorf("the timeline counts %d, the store %d to %d", shown, least, most)
	}
	_ = authority.ActCertList
	_ = web.Prefix
}

// BenchmarkPages measures each page's server time over the loaded
// inventory and reports its p95 (ms). The timeline and the overview keep
// their aggregates for 30s and 15s, so b.N runs mostly measure the cache:
// "timeline-cold" and "overview-cold" build a fresh console (and so a fresh
// timeline cache) or read the store's expiry gauge query for every run.
func BenchmarkPages(b *testing.B) {
	bc := newBigConsole(b)
	b.Logf("load average before: %s", loadAverage())
	pages := append(bc.pages(), measured{"timeline-cold", func(int) string { return "/ui/timeline" }})
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var ds []time.Duration
			for i := 0; b.Loop(); i++ {
				console := http.Handler(bc.h.console)
				if p.name == "timeline-cold" {
					b.StopTimer()
					c, err := web.New(web.Config{Authority: bc.h.f.Authority, TrustDomain: "example.org", Metrics: bc.h.registry})
					if err != nil {
						b.Fatal(err)
					}
					console = c
					b.StartTimer()
				}
				_, took := bc.get(b, console, p.path(i))
				ds = append(ds, took)
			}
			b.ReportMetric(float64(p95(ds).Microseconds())/1000, "p95-ms")
		})
	}
	b.Run("expiry-gauge-query", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			if _, err := bc.h.f.Store.CertificatesByExpiry(context.Background(), time.Now()); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		b.ReportMetric(float64(p95(ds).Microseconds())/1000, "p95-ms")
	})
	b.Logf("load average after: %s", loadAverage())
}

// loadAverage is the machine's, to set next to any figure.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
