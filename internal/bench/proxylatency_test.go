package bench

import (
	"context"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/keys"
)

// TestBenchProxyLatencyRuns runs the proxy section of `mica bench
// handshake` briefly: every path answers without errors. Figures are
// printed by the command, never asserted.
func TestBenchProxyLatencyRuns(t *testing.T) {
	b, err := newHandshakeBench(keys.Default, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.concurrency, b.rounds, b.slot = 2, 1, 300*time.Millisecond
	out, lines, err := benchProxyLatency(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	res := out.(proxyLatencyResult)
	if len(res.Cases) != 3 || len(lines) != 7 {
		t.Fatalf("%d cases, %d lines: %v", len(res.Cases), len(lines), lines)
	}
	for _, c := range res.Cases {
		if c.Requests == 0 || c.Errors != 0 || c.P99Ms < c.P50Ms {
			t.Errorf("%s: %+v", c.Path, c)
		}
	}
}
