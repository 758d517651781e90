package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mica-pki/mica/client"
)

// `mica cert list` follows the server's cursor, prints one document
// however many pages it reads, and when --limit cuts the list says so on
// stderr with the --cursor that lists the rest: never a silent cut.
func TestCertListCursor(t *testing.T) {
	e := newTestEnv(t, "sqlite")
	for _, id := range []string{"a", "b", "c"} {
		e.issue("spiffe://example.org/billing/"+id, "service")
	}
	all, err := e.admin.ListCertificates(context.Background(), client.ListFilter{})
	if err != nil || len(all) < 5 {
		t.Fatalf("the inventory: %d certificates, %v; want at least 5", len(all), err)
	}
	var want []string
	for _, c := range all {
		want = append(want, c.Serial)
	}
	serials := func(out string) []string {
		t.Helper()
		var certs []client.Certificate
		if err := json.Unmarshal([]byte(out), &certs); err != nil {
			t.Fatalf("not one JSON document: %v\n%s", err, out)
		}
		var s []string
		for _, c := range certs {
			s = append(s, c.Serial)
		}
		return s
	}
	cursorIn := regexp.MustCompile(`--cursor ([A-Za-z0-9_-]+) `)

	// Every certificate, two a page: one JSON array, nothing on stderr.
	r := e.mica("cert", "list", "--limit", "0", "--page-size", "2", "--output", "json")
	if r.code != 0 || r.stderr != "" || !slices.Equal(serials(r.stdout), want) {
		t.Fatalf("--limit 0 --page-size 2: exit %d, stderr %q, listed %v; want %v", r.code, r.stderr, serials(r.stdout), want)
	}

	// Cut at 3 over pages of 2: three listed, and stderr says how to go on.
	r = e.mica("cert", "list", "--limit", "3", "--page-size", "2", "--output", "json")
	first := serials(r.stdout)
	m := cursorIn.FindStringSubmatch(r.stderr)
	if r.code != 0 || !slices.Equal(first, want[:3]) || m == nil || !strings.Contains(r.stderr, "listed 3") {
		t.Fatalf("--limit 3: exit %d, listed %v, stderr %q; want the first 3 and the --cursor of the rest", r.code, first, r.stderr)
	}
	r = e.mica("cert", "list", "--cursor", m[1], "--limit", "0", "--output", "json")
	if rest := serials(r.stdout); r.code != 0 || r.stderr != "" || !slices.Equal(append(first, rest...), want) {
		t.Errorf("--cursor: exit %d, stderr %q, listed %v after %v; want %v", r.code, r.stderr, rest, first, want)
	}

	// A limit the list does not reach cuts nothing and says nothing.
	if r = e.mica("cert", "list", "--limit", "1000", "--output", "json"); r.stderr != "" || !slices.Equal(serials(r.stdout), want) {
		t.Errorf("--limit 1000: stderr %q", r.stderr)
	}

	// CSV and the table cut too, with one header.
	r = e.mica("cert", "list", "--limit", "2", "--page-size", "1", "--output", "csv")
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(rows) != 3 || rows[0][0] != "serial" || !cursorIn.MatchString(r.stderr) {
		t.Errorf("csv, --limit 2: %v rows %q, stderr %q", err, r.stdout, r.stderr)
	}
	r = e.mica("cert", "list", "--limit", "2", "--page-size", "1")
	if strings.Count(r.stdout, "SERIAL") != 1 || strings.Count(strings.TrimSpace(r.stdout), "\n") != 2 || !cursorIn.MatchString(r.stderr) {
		t.Errorf("table, --limit 2:\n%s\nstderr %q", r.stdout, r.stderr)
	}

	// The cursor of one filter is refused with another, and a damaged
	// one, with a word on what to do.
	for _, args := range [][]string{
		{"cert", "list", "--cursor", m[1], "--profile", "service"},
		{"cert", "list", "--cursor", m[1] + "x"},
	} {
		r = e.mica(args...)
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "without cursor") {
			t.Errorf("mica %v: exit %d, stdout %q, stderr %q; want a refusal saying to start again", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"cert", "list", "--limit", "-1"}, {"cert", "list", "--page-size", "0"}, {"cert", "list", "--source", "discovered", "--cursor", m[1]}} {
		if r = e.mica(args...); r.code != 2 {
			t.Errorf("mica %v: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}
