package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mica-pki/mica/client"
)

// limitsConfig is added to the test config: a tight per-identity limit so
// that a renewal loop runs into it within a test.
const limitsConfig = `limits:
  per_identity: {rate: 3/h}
`

// TestReportAndLimits runs the expiry report and a rate-limited renewal
// loop through the real binary, on SQLite and on PostgreSQL.
func TestReportAndLimits(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			e := newTestEnvWith(t, engine, limitsConfig)
			t.Run("ReportExpiring", func(t *testing.T) { e.t = t; e.testReportExpiring(t) })
			t.Run("RenewalLoopIsRateLimited", func(t *testing.T) { e.t = t; e.testRenewalLoopLimited(t) })
		})
	}
}

func (e *testEnv) testReportExpiring(t *testing.T) {
	// a is renewed: its first certificate is superseded. b is revoked. c is
	// at risk as enrolled. The web certificate lives 24h.
	a := e.issue("spiffe://example.org/billing/a", "service")
	supersededA := readLeaf(t, a).SerialNumber.Text(16)
	e.micaOK("cert", "renew", "--cert", filepath.Join(a, certFile), "--key", filepath.Join(a, keyFile))
	renewedA := readLeaf(t, a).SerialNumber.Text(16)
	b := e.issue("spiffe://example.org/billing/b", "service")
	e.micaOK("cert", "revoke", readLeaf(t, b).SerialNumber.Text(16), "--reason", "keyCompromise")
	c := readLeaf(t, e.issue("spiffe://example.org/billing/c", "service")).SerialNumber.Text(16)
	web := readLeaf(t, e.issue("api.svc.example.org", "web")).SerialNumber.Text(16)

	report := func(args ...string) client.ExpiringReport {
		t.Helper()
		var rep client.ExpiringReport
		out := e.micaOK(append([]string{"report", "expiring", "--output", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("report --output json is not JSON: %v\n%s", err, out)
		}
		return rep
	}
	rep := report("--within", "2h")
	// Service certificates only (the web one lives 24h, mica's own longer),
	// grouped by owner: the admin who made the tokens, kept through a's
	// renewal.
	if rep.Total != 2 || len(rep.Groups) != 1 || rep.Within != "2h" {
		t.Fatalf("--within 2h: total %d in %d groups; want 2 in 1\n%+v", rep.Total, len(rep.Groups), rep)
	}
	groups := map[string][]string{}
	for _, g := range rep.Groups {
		if g.Profile != "service" || g.Count != len(g.Certificates) || g.EarliestExpiry.IsZero() {
			t.Errorf("group %+v", g)
		}
		for _, cert := range g.Certificates {
			groups[g.Owner] = append(groups[g.Owner], cert.Serial)
		}
	}
	const admin = "spiffe://example.org/mica/admin/admin"
	if got := groups[admin]; !slices.Equal(got, []string{renewedA, c}) {
		t.Errorf("owner %s lists %v, want the renewed certificate %s and c %s, soonest first (not the superseded %s): %v",
			admin, got, renewedA, c, supersededA, groups)
	}

	// 30h takes in the web certificate, in its own profile group.
	if rep := report("--within", "30h"); rep.Total != 3 || len(rep.Groups) != 2 || rep.Groups[1].Profile != "web" || rep.Groups[1].Owner != admin || rep.Groups[1].Certificates[0].Serial != web {
		t.Errorf("--within 30h: %+v", rep)
	}
	if rep := report("--within", "30h", "--profile", "web"); rep.Total != 1 || len(rep.Groups) != 1 {
		t.Errorf("--profile web: %+v", rep)
	}
	// The web certificate was backdated a minute, so a day takes it in.
	for w, n := range map[string]int{"90m": 2, "12h": 2, "1d": 3} {
		if rep := report("--within", w); rep.Total != n {
			t.Errorf("--within %s: total %d, want %d", w, rep.Total, n)
		}
	}

	table := e.micaOK("report", "expiring", "--within", "2h")
	for _, want := range []string{"2 certificates expire within 2h", "PROFILE", "OWNER", "service / " + admin, renewedA, c} {
		if !strings.Contains(table, want) {
			t.Errorf("table output lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, supersededA) {
		t.Errorf("table lists the superseded certificate %s:\n%s", supersededA, table)
	}

	rows, err := csv.NewReader(strings.NewReader(e.micaOK("report", "expiring", "--within", "30h", "--output", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || strings.Join(rows[0], ",") != "profile,owner,group_count,group_earliest_expiry,serial,identity,not_after,fingerprint_sha256" {
		t.Fatalf("csv = %q, want a header and 3 rows", rows)
	}
	var serials []string
	for _, r := range rows[1:] {
		serials = append(serials, r[4])
	}
	slices.Sort(serials)
	want := []string{renewedA, c, web}
	slices.Sort(want)
	if !slices.Equal(serials, want) {
		t.Errorf("csv serials %v, want %v", serials, want)
	}

	if r := e.mica("report", "expiring", "--within", "soon"); r.code != 2 || !strings.Contains(r.stderr, "--within") {
		t.Errorf("bad --within: exit %d, %q", r.code, r.stderr)
	}
	// Admins only: a workload's own credential is refused.
	if r := e.mica("report", "expiring", "--cert", filepath.Join(a, certFile), "--key", filepath.Join(a, keyFile)); r.code != 1 || !strings.Contains(r.stderr, "admin") {
		t.Errorf("report as a workload: exit %d, %q", r.code, r.stderr)
	}
}

func (e *testEnv) testRenewalLoopLimited(t *testing.T) {
	// 3 an hour per identity: the enrollment and two renewals pass, the
	// third renewal is refused with Retry-After.
	dir := e.issue("spiffe://example.org/billing/loop", "service")
	renew := func() cmdResult {
		return e.mica("cert", "renew", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile))
	}
	for i := range 2 {
		if r := renew(); r.code != 0 {
			t.Fatalf("renewal %d: exit %d: %s", i+1, r.code, r.stderr)
		}
	}
	r := renew()
	if r.code != 1 || !strings.Contains(r.stderr, "too many requests from identity spiffe://example.org/billing/loop") || !strings.Contains(r.stderr, "retry in") {
		t.Fatalf("third renewal: exit %d, stderr %q; want the rate limit's refusal", r.code, r.stderr)
	}
	var p *client.Problem
	_, err := e.admin.ExpiringReport(context.Background(), client.ExpiringQuery{Within: "nonsense"})
	if !errors.As(err, &p) || p.Status != 400 {
		t.Errorf("report with a bad window: %v, want a 400 problem", err)
	}
	out := e.micaOK("audit", "search", "--action", "rate.limited", "--output", "jsonl")
	if !strings.Contains(out, "spiffe://example.org/billing/loop") || !bytes.Contains([]byte(out), []byte(`"outcome":"refused"`)) {
		t.Errorf("audit search for rate.limited:\n%s", out)
	}
}
