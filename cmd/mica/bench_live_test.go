package main

import (
	"encoding/json"
	"testing"

	"github.com/mica-pki/mica/internal/bench"
)

// TestBenchRevokeLiveRuns runs `mica bench revoke-live` small: every
// connection of each revoked client is closed, and no other. Figures are
// printed by the command, never asserted.
func TestBenchRevokeLiveRuns(t *testing.T) {
	out := micaOK(t, nil, "bench", "revoke-live", "--connections", "24", "--clients", "6", "--json")
	var res bench.LiveRevocationResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, out)
	}
	if res.Closed != 24 || res.Missing != 0 || res.Early != 0 || res.Revocations != 6 {
		t.Errorf("closed %d, missing %d, closed before their revocation %d, revocations %d; want 24, 0, 0, 6", res.Closed, res.Missing,
			res.Early, res.Revocations)
	}
	if res.P99Ms < res.P50Ms || res.LoadAverage == "" {
		t.Errorf("figures %+v", res)
	}
}
