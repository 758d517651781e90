package bench

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The summary judges each load figure against its target and shows the
// command that produced it; a benchmark that failed is listed, not lost.
func TestSummary(t *testing.T) {
	var s Summary
	s.AddRenew(&RenewResult{ServerCPUMs: 0.29, PerSecond: 2000, P50Ms: 20, P99Ms: 51, LoadBefore: "1.50, 1.00, 0.50"}, "mica bench renew --spawn")
	s.AddIssue(&IssueResult{ServerCPUMs: 0.46, PerSecond: 1500, P50Ms: 30, P99Ms: 40, Errors: 2, LoadBefore: "2.25, 1.00, 0.50"}, "mica bench issue --spawn")
	s.AddError("scale", errors.New("no space left"))
	ok := map[string]bool{}
	for _, f := range s.Figures {
		ok[f.Name] = f.OK
	}
	want := map[string]bool{
		"renew: server CPU per certificate":  true,
		"renew: p99 latency":                 false,
		"renew: throughput, p50":             true,
		"enroll: server CPU per certificate": false,
		"enroll: p99 latency":                true,
		"enroll: throughput, p50":            false, // two requests failed
	}
	for name, w := range want {
		if got, found := ok[name]; !found || got != w {
			t.Errorf("%s: ok = %v (listed %v), want %v", name, got, found, w)
		}
	}
	if s.Figures[0].Load1 != 1.5 {
		t.Errorf("load of the renew figures = %v, want 1.5 (the 1-minute average at its start)", s.Figures[0].Load1)
	}
	var out bytes.Buffer
	s.WriteText(&out)
	for _, want := range []string{"mica bench renew --spawn", "0.290 ms", "≤ 0.30 ms", "FAILED scale: no space left", "2 errors"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
