package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/bench"
)

// TestBenchRenewRuns runs `mica bench renew` briefly in-process with each
// key mode, and `bench renew` and `bench issue` against a server they spawn
// (this binary, init and serve in a temporary directory), whose CPU time
// they read from /proc.
func TestBenchRenewRuns(t *testing.T) {
	decode := func(t *testing.T, out string) bench.RenewResult {
		t.Helper()
		var res bench.RenewResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("bench --json output is not JSON: %v\n%s", err, out)
		}
		return res
	}
	for _, key := range []string{bench.RenewKeep, bench.RenewKeepCSR, bench.RenewNew} {
		t.Run("in-process/"+key, func(t *testing.T) {
			res := decode(t, micaOK(t, nil, "bench", "renew", "--key", key, "--concurrency", "4", "--duration", "1s", "--warmup", "0", "--json"))
			if res.Mode != "in-process" || res.Key != key || res.Renewed == 0 || res.Errors != 0 || res.P99Ms < res.P50Ms ||
				res.ServerCPUMs <= 0 || res.LoadBefore == "" || !strings.Contains(res.Note, "upper bound") {
				t.Fatalf("bench result %+v", res)
			}
		})
	}
	for _, conn := range []string{bench.ConnReuse, bench.ConnNew} {
		t.Run("spawned/connection-"+conn, func(t *testing.T) {
			res := decode(t, micaOK(t, nil, "bench", "renew", "--spawn", "--connection", conn, "--concurrency", "4", "--duration", "1s", "--warmup", "0", "--json"))
			if res.Mode != "server" || !strings.HasPrefix(res.Server, "spawned: ") || res.Connection != conn || res.Renewed == 0 || res.Errors != 0 ||
				res.ServerCPUMs <= 0 || res.ClientCPUMs <= 0 || res.PeakRSSBytes == 0 {
				t.Fatalf("bench result %+v", res)
			}
		})
	}
	t.Run("issue spawned", func(t *testing.T) {
		var res bench.IssueResult
		out := micaOK(t, nil, "bench", "issue", "--spawn", "--concurrency", "4", "--duration", "1s", "--warmup", "0", "--json")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("bench --json output is not JSON: %v\n%s", err, out)
		}
		if res.Mode != "server" || res.Issued == 0 || res.Errors != 0 || res.ServerCPUMs <= 0 || res.ClientCPUMs <= 0 || res.PeakRSSBytes == 0 {
			t.Fatalf("bench result %+v", res)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"--key", "reuse"}, {"--spawn", "--server", "https://127.0.0.1:1"}, {"--server-cpus", "0"},
			{"--server-pid", "1"}, {"--server", "https://127.0.0.1:1"}, {"--connection", "keep"}, {"--connection", "new"},
			{"--spawn", "--connection", "new", "--key", "new"}} {
			r := mica(t, nil, append([]string{"bench", "renew"}, args...)...)
			if r.code != 2 {
				t.Errorf("bench renew %v: exit %d, stderr %q; want 2", args, r.code, r.stderr)
			}
		}
	})
}
